package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/shoal-ci/shoal/internal/fsutil"
)

// defaultAddr is the API address the operator verbs use when nothing else names one.
const defaultAddr = "127.0.0.1:7420"

// cliConfig is the operator's file of defaults for the API connection, so that --addr and --token need not
// be repeated. A flag beats the environment, which beats the file, which beats the built-in default.
type cliConfig struct {
	Addr  string `yaml:"addr,omitempty" json:"addr,omitempty"`
	Token string `yaml:"token,omitempty" json:"token,omitempty"`
}

// cliConfigPath is $SHOAL_CONFIG, or cli.yaml in $XDG_CONFIG_HOME/shoal (~/.config/shoal by default). The XDG
// layout is used on every OS so that the path the docs name is the path on the operator's laptop too.
func cliConfigPath() (string, error) {
	if p := os.Getenv("SHOAL_CONFIG"); p != "" {
		return p, nil
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the CLI config file: %w: set SHOAL_CONFIG to its path", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "shoal", "cli.yaml"), nil
}

// loadCLIConfig reads the config file at path; a missing file is an empty config.
func loadCLIConfig(path string) (cliConfig, error) {
	var cfg cliConfig
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read the CLI config %s: %w", path, err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("the CLI config %s is not valid YAML (%v): fix it, or remove it and run `node config set`", path, err)
	}
	return cfg, nil
}

// saveCLIConfig writes cfg to path, readable by its owner only since it may hold a token.
func saveCLIConfig(path string, cfg cliConfig) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create the CLI config directory: %w", err)
	}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode the CLI config: %w", err)
	}
	// 0600 even over a file that was wider: a token must not stay readable by others.
	if err := fsutil.WriteAtomic(path, raw, 0o600); err != nil {
		return fmt.Errorf("write the CLI config: %w", err)
	}
	return nil
}

// setting is one resolved connection setting and where it came from.
type setting struct {
	Value  string `json:"value"`
	Source string `json:"source"`
}

// resolveSetting applies the precedence flag > environment > config file > default.
func resolveSetting(flag string, flagSet bool, envKey, file, def string) setting {
	switch {
	case flagSet:
		return setting{flag, "flag"}
	case os.Getenv(envKey) != "":
		return setting{os.Getenv(envKey), "env " + envKey}
	case file != "":
		return setting{file, "config file"}
	case def != "":
		return setting{def, "default"}
	}
	return setting{"", "unset"}
}

// connection resolves --addr and --token for cmd. A config file that cannot be read is reported and left
// out rather than failing the command: `node agent` must start whatever the operator's CLI file says.
func (c *cli) connection(cmd *cobra.Command) (addr, token setting, path string) {
	path, err := cliConfigPath()
	var file cliConfig
	if err == nil {
		file, err = loadCLIConfig(path)
	}
	if err != nil {
		fmt.Fprintf(c.errOut, "warning: %v\n", err)
	}
	flags := cmd.Flags()
	addr = resolveSetting(c.addr, flags.Changed("addr"), "SHOAL_ADDR", file.Addr, defaultAddr)
	token = resolveSetting(c.token, flags.Changed("token"), "SHOAL_TOKEN", file.Token, "")
	return addr, token, path
}

// maskToken shows a token's id (the part before the dot, which `node token list` shows too) and hides its
// secret.
func maskToken(t string) string {
	if t == "" {
		return "-"
	}
	if id, _, ok := strings.Cut(t, "."); ok && id != "" {
		return id + ".****"
	}
	return "****"
}

func (c *cli) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show or set the CLI's defaults for --addr and --token",
		Long: `The CLI reads --addr and --token from, in order: the flag, SHOAL_ADDR / SHOAL_TOKEN, and the config file
~/.config/shoal/cli.yaml ($XDG_CONFIG_HOME/shoal/cli.yaml, or the path in SHOAL_CONFIG).`,
	}
	set := &cobra.Command{
		Use:       "set addr|token VALUE",
		Short:     "Save addr or token in the config file (written with mode 0600)",
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"addr", "token"},
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := cliConfigPath()
			if err != nil {
				return err
			}
			cfg, err := loadCLIConfig(path)
			if err != nil {
				return err
			}
			switch args[0] {
			case "addr":
				cfg.Addr = args[1]
			case "token":
				cfg.Token = args[1]
			default:
				return fmt.Errorf("unknown setting %q: the config file holds addr and token", args[0])
			}
			if err := saveCLIConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "saved %s in %s\n", args[0], path)
			return nil
		},
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the address and token the CLI would use, and where each comes from (the token masked)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, token, path := c.connection(cmd)
			token.Value = maskToken(token.Value)
			out := struct {
				File  string  `json:"file"`
				Addr  setting `json:"addr"`
				Token setting `json:"token"`
			}{path, addr, token}
			return c.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "SETTING\tVALUE\tFROM")
				fmt.Fprintf(w, "addr\t%s\t%s\n", addr.Value, addr.Source)
				fmt.Fprintf(w, "token\t%s\t%s\n", token.Value, token.Source)
				fmt.Fprintf(w, "file\t%s\t\n", path)
			})
		},
	}
	cmd.AddCommand(set, show)
	return cmd
}
