// Package sqlmigrate loads the versioned SQL migrations that the SQL backends embed and judges
// the version a database records. Applying them (locking, recording versions) is each
// backend's own business; reading and ordering the files, and the errors a backend returns
// for a schema it cannot use (storage.ErrSchemaTooNew, storage.ErrNotMigrated), are the same
// for all of them.
package sqlmigrate

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
)

// Migration is one migration file, numbered by the digits its name starts with
// ("0001_init.sql" is version 1).
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Load returns the files of dir in fsys as migrations in version order. Versions must run
// 1, 2, 3, ... without gaps or repeats; anything else is an error naming the file.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		digits, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(digits)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration file %q does not start with a version number", e.Name())
		}
		data, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %q: want version %d", m.Name, i+1)
		}
	}
	return out, nil
}

// CheckNewer returns an error wrapping storage.ErrSchemaTooNew when the version recorded in
// table is newer than known, the last version this build has; otherwise nil. Migrate checks
// this before it applies anything.
func CheckNewer(table string, recorded, known int) error {
	if recorded > known {
		return fmt.Errorf("%w: %s records version %d, this build knows 1..%d", storage.ErrSchemaTooNew, table, recorded, known)
	}
	return nil
}

// Check returns nil when table records exactly the version this build works with, known,
// and otherwise an error wrapping storage.ErrSchemaTooNew (newer) or storage.ErrNotMigrated
// (older). A backend checks this before its first unit.
func Check(table string, recorded, known int) error {
	if err := CheckNewer(table, recorded, known); err != nil {
		return err
	}
	if recorded < known {
		return fmt.Errorf("%w: %s records version %d, this build needs %d", storage.ErrNotMigrated, table, recorded, known)
	}
	return nil
}

// Missing is the error for a version table (or its database or schema) that does not exist:
// it wraps storage.ErrNotMigrated.
func Missing(table string) error {
	return fmt.Errorf("%w: %s does not exist", storage.ErrNotMigrated, table)
}
