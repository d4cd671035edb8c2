package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

const usage = `eastwest: an east-west gateway for multi-cluster service meshes.

Usage:
  eastwest [run] [flags]     start the gateway
  eastwest validate [flags]  check the settings and mesh files, print every error
  eastwest demo [flags]      start the gateway with local demo endpoints
  eastwest version           print the version

Flags:
`

func main() {
	os.Exit(realMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs one command and returns the process exit code.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := pflag.NewFlagSet("eastwest", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	configFile := fs.StringP("config", "c", "", "settings file (YAML); the embedded default when empty")
	fs.String("admin-address", "", "admin server address (admin.address)")
	fs.String("forwarder", "", "auto, sockmap or splice (forwarder)")
	fs.String("locality", "", "this gateway's region/zone/subzone (locality)")
	fs.String("network", "", "this gateway's network (network)")
	fs.String("cluster-name", "", "this gateway's cluster (clusterName)")
	fs.String("log-level", "", "debug, info, warn or error (log.level)")
	fs.String("listen", "", "address of the first listener (listeners[0].address)")
	fs.StringSlice("mesh", nil, "Istio YAML files or folders (mesh.paths)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "eastwest", buildVersion())
		return 0
	case "help":
		fs.Usage()
		return 0
	case "validate":
		return validate(ctx, *configFile, fs, stdout, stderr)
	case "run", "demo":
		s, err := loadSettings(*configFile, fs)
		if err != nil {
			fmt.Fprintln(stderr, "eastwest:", err)
			return 1
		}
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if cmd == "demo" {
			err = runDemo(ctx, s, stdout, stderr)
		} else {
			err = run(ctx, s, *configFile, fs, stdout, stderr)
		}
		if err != nil {
			fmt.Fprintln(stderr, "eastwest:", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "eastwest: unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return "dev-" + s.Value
			}
		}
		return "dev (" + bi.GoVersion + ")"
	}
	return version
}

// validate loads settings and mesh files without starting anything and
// prints every problem.
func validate(ctx context.Context, file string, fs *pflag.FlagSet, stdout, stderr io.Writer) int {
	s, err := loadSettings(file, fs)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	res, err := loadMesh(ctx, s)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "warning: %s: %s: %s\n", w.File, w.Resource, w.Message)
	}
	fmt.Fprintf(stdout, "ok: settings %s, %d clusters from %d files\n", orDefault(file), len(res.Snapshot.Clusters()), len(res.Files))
	return 0
}

func newLogger(s *Settings, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(orStr(s.Log.Level, "info"))))
	opts := &slog.HandlerOptions{Level: lvl}
	if s.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
