package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ci/shoal/daemon"
	"github.com/shoal-ci/shoal/spread"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "": 0, "50mbit": 6_250_000, "50Mbit/s": 6_250_000, "1.5gbit": 187_500_000, "800kbit": 100_000,
		"6MB": 6_000_000, "6mb/s": 6_000_000, "2MiB": 2 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30, " 10 kb ": 10_000,
	} {
		got, err := parseRate("--upload-limit", in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"50", "-5mbit", "mbit", "fast", "5 furlongs", "0.000001kbit", "1e300gbit", "NaNmbit"} {
		if got, err := parseRate("--upload-limit", in); err == nil {
			t.Errorf("parseRate(%q) = %d, want an error", in, got)
		} else if !strings.Contains(err.Error(), "--upload-limit") || !strings.Contains(err.Error(), "50mbit") {
			t.Errorf("parseRate(%q): the error %q should name the flag and show an example", in, err)
		}
	}
}

// --upload-limit auto turns on delay-based pacing instead of a fixed cap.
func TestUploadLimitAuto(t *testing.T) {
	for in, pacing := range map[string]bool{"auto": true, " AUTO ": true, "50mbit": false, "0": false} {
		f := nodeFlags{uploadLimit: in, downloadLimit: "0", minHolders: 2, keepReleases: 5}
		o, err := f.spreadOptions()
		if err != nil || o.UploadPacing != pacing || (pacing && o.UploadLimit != 0) {
			t.Errorf("--upload-limit %q: %+v, %v; want pacing %v", in, o, err, pacing)
		}
	}
}

// A node verb with a bad spread setting fails before it creates anything.
func TestBadSpreadFlagChangesNothing(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"--upload-limit", "50"},
		{"--download-limit", "lots"},
		{"--min-holders", "0"},
		{"--keep-releases", "-1"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		out, err := runCLI(t, append([]string{"init", "--exit", "--name", "a", "--bind", "127.0.0.1", "--data-dir", dir}, args...)...)
		if err == nil {
			t.Fatalf("init %v succeeded: %s", args, out)
		}
		if !strings.Contains(err.Error(), args[0]) {
			t.Errorf("init %v: the error %q does not name the flag", args, err)
		}
		if _, statErr := os.Stat(dir); !os.IsNotExist(statErr) {
			t.Errorf("init %v failed (%v) but left a data dir behind", args, err)
		}
	}
}

// The flags, as a node verb parses them, become the spread's options; the defaults are the documented ones.
func TestSpreadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want spread.Options
	}{
		{nil, spread.Options{MinHolders: 2, Keep: 5}},
		{[]string{"--upload-limit", "8mbit", "--download-limit", "2MiB", "--min-holders", "3", "--keep-releases", "9"},
			spread.Options{UploadLimit: 1_000_000, DownloadLimit: 2 << 20, MinHolders: 3, Keep: 9}},
	} {
		var f nodeFlags
		cmd := &cobra.Command{Use: "agent"}
		f.register(cmd, false)
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		got, err := f.spreadOptions()
		if err != nil || got != c.want {
			t.Errorf("%v: %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
}

// The cleanup and exec log flags: defaults, values, and bad values refused with what to give.
func TestServiceFlags(t *testing.T) {
	parse := func(args ...string) (*daemon.Main, error) {
		var f nodeFlags
		cmd := &cobra.Command{Use: "agent"}
		f.register(cmd, false)
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return f.daemon(daemon.Open)
	}
	o, err := parse()
	if err != nil || o.Spread.GCInterval != time.Minute || o.Deployer.ExecLogMax != 10<<20 || o.Deployer.ExecLogKeep != 3 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	o, err = parse("--gc-interval", "5s", "--exec-log-max", "64KiB", "--exec-log-keep", "2")
	if err != nil || o.Spread.GCInterval != 5*time.Second || o.Deployer.ExecLogMax != 64<<10 || o.Deployer.ExecLogKeep != 2 {
		t.Fatalf("set: %+v %v", o, err)
	}
	for _, bad := range [][]string{{"--exec-log-max", "10"}, {"--exec-log-max", "1mbit"}, {"--exec-log-keep", "0"}, {"--gc-interval", "1ms"}} {
		if _, err := parse(bad...); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
