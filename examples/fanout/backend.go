package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// backends opens each storage backend by name: dsn is the backend's address (a file for
// bbolt; empty picks a temporary one).
var backends = map[string]func(ctx context.Context, dsn string) (storage.Storage, func(), error){
	"bolt": func(ctx context.Context, dsn string) (storage.Storage, func(), error) {
		cleanup := func() {}
		if dsn == "" {
			dir, err := os.MkdirTemp("", "chronoforge-fanout-")
			if err != nil {
				return nil, nil, err
			}
			dsn = filepath.Join(dir, "fanout.db")
			cleanup = func() { os.RemoveAll(dir) }
		}
		s, err := bolt.Open(dsn)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return s, func() { s.Close(); cleanup() }, nil
	},
}

func backendNames() string {
	var names []string
	for n := range backends {
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

func openBackend(ctx context.Context, name, dsn string) (storage.Storage, func(), error) {
	open, ok := backends[name]
	if !ok {
		return nil, nil, fmt.Errorf("unknown backend %q (have %s)", name, backendNames())
	}
	return open(ctx, dsn)
}
