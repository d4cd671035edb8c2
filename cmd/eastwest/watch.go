package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchFiles signals changed (without blocking) shortly after one of files
// or a YAML file in one of dirs changes. Files are watched through their
// folders, so editors that replace a file and Kubernetes ConfigMap updates
// (an atomic swap of the "..data" symlink) are seen; other files in those
// folders, such as a log file, are ignored. Bursts become one signal.
func watchFiles(ctx context.Context, paths []string, changed chan<- struct{}, log *slog.Logger) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	files := map[string]bool{} // watched file paths
	dirs := map[string]bool{}  // folders whose YAML files are all watched
	watched := map[string]bool{}
	add := func(dir string) error {
		if watched[dir] {
			return nil
		}
		watched[dir] = true
		return w.Add(dir)
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		p, err := filepath.Abs(p)
		if err != nil {
			w.Close()
			return err
		}
		fi, err := os.Stat(p)
		if err != nil {
			w.Close()
			return err
		}
		if !fi.IsDir() {
			files[p] = true
			if err := add(filepath.Dir(p)); err != nil {
				w.Close()
				return err
			}
			continue
		}
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			dirs[path] = true
			return add(path)
		})
		if err != nil {
			w.Close()
			return err
		}
	}
	relevant := func(name string) bool {
		name, _ = filepath.Abs(name)
		base := filepath.Base(name)
		if files[name] || (strings.HasPrefix(base, "..") && watched[filepath.Dir(name)]) {
			return true
		}
		ext := filepath.Ext(base)
		return dirs[filepath.Dir(name)] && (ext == ".yaml" || ext == ".yml") && !strings.HasPrefix(base, ".")
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
				if !relevant(ev.Name) {
					continue
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
