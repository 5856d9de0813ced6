package integration

import (
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"testing"
)

// scaleProfile starts a CPU profile of one phase of TestBenchScale when SHOAL_SCALE_PROFILE names a directory
// (the file is <dir>/<phase>.cpu.pprof; read it with `go tool pprof -top integration.test FILE`), and returns
// the function that stops it. Without the variable it does nothing.
func scaleProfile(t *testing.T, phase string) (stop func()) {
	dir := os.Getenv("SHOAL_SCALE_PROFILE")
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, phase+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	t.Logf("profiling %s into %s", phase, path)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
			if g, err := os.Create(filepath.Join(dir, phase+".goroutines.txt")); err == nil {
				pprof.Lookup("goroutine").WriteTo(g, 1)
				g.Close()
			}
		})
	}
	t.Cleanup(stop) // a phase that times out still leaves its profile
	return stop
}
