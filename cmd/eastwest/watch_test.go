package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWatchFilesSeesOnlyWhatItWatches(t *testing.T) {
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	other := filepath.Join(dir, "gateway.log")
	cm := t.TempDir() // a ConfigMap-style mount: files are symlinks through ..data
	for _, f := range []string{mesh, other} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(cm, "..2026_a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cm, "..2026_a", "eastwest.yaml"), []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_a", filepath.Join(cm, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "eastwest.yaml"), filepath.Join(cm, "eastwest.yaml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 1)
	// The settings file is given relative to the working directory.
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, filepath.Join(cm, "eastwest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := watchFiles(ctx, []string{rel, mesh}, changed, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-changed:
			if !want {
				t.Fatalf("%s: a reload was signalled", what)
			}
		case <-time.After(700 * time.Millisecond):
			if want {
				t.Fatalf("%s: no reload signalled", what)
			}
		}
	}
	if err := os.WriteFile(other, []byte("log line"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("a log file beside the mesh file changed", false)
	if err := os.WriteFile(mesh, []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("the mesh file changed", true)
	// Kubernetes updates a ConfigMap by swapping the ..data symlink.
	if err := os.Mkdir(filepath.Join(cm, "..2026_b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cm, "..2026_b", "eastwest.yaml"), []byte("b"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_b", filepath.Join(cm, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(cm, "..data_tmp"), filepath.Join(cm, "..data")); err != nil {
		t.Fatal(err)
	}
	expect("the ConfigMap's ..data symlink was swapped", true)
}

func TestEmptyMeshFileIsNotAReload(t *testing.T) {
	dir := t.TempDir()
	full, empty := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	if err := os.WriteFile(full, []byte("kind: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := emptyMeshFile([]string{dir}); err != nil {
		t.Fatalf("no empty file yet: %v", err)
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]string{{dir}, {empty}} {
		if err := emptyMeshFile(p); err == nil || !strings.Contains(err.Error(), "b.yaml") {
			t.Fatalf("emptyMeshFile(%v) = %v, want an error naming b.yaml", p, err)
		}
	}
}
