package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchFiles signals changed (without blocking) shortly after any of paths,
// or a file in a folder among them, changes. Watching the parent folders
// catches editors that replace a file and Kubernetes ConfigMap symlink
// swaps; bursts of events become one reload.
func watchFiles(ctx context.Context, paths []string, changed chan<- struct{}, log *slog.Logger) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	add := func(dir string) error {
		if seen[dir] {
			return nil
		}
		seen[dir] = true
		return w.Add(dir)
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			w.Close()
			return err
		}
		dir := p
		if !fi.IsDir() {
			dir = filepath.Dir(p)
		}
		err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && (path == dir || fi.IsDir()) {
				return add(path)
			}
			if err == nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		})
		if err != nil {
			w.Close()
			return err
		}
	}
	go func() {
		defer w.Close()
		var timer <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				log.Debug("mesh file event", "path", ev.Name, "op", ev.Op.String())
				timer = time.After(200 * time.Millisecond)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("watching mesh files", "err", err)
			case <-timer:
				timer = nil
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
	}()
	return nil
}
