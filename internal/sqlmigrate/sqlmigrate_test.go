package sqlmigrate

import (
	"errors"
	"testing"
	"testing/fstest"

	"github.com/chronoforge/chronoforge/storage"
)

func TestLoadOrdersAndChecksVersions(t *testing.T) {
	ok := fstest.MapFS{
		"m/0002_more.sql": {Data: []byte("B;")},
		"m/0001_init.sql": {Data: []byte("A;")},
	}
	ms, err := Load(ok, "m")
	if err != nil || len(ms) != 2 || ms[0].Name != "0001_init.sql" || ms[1].SQL != "B;" || ms[1].Version != 2 {
		t.Fatalf("Load = %+v, %v", ms, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":       {"m/0001_a.sql": {}, "m/0003_c.sql": {}},
		"repeat":    {"m/0001_a.sql": {}, "m/01_b.sql": {}},
		"no number": {"m/init.sql": {}},
	} {
		if _, err := Load(fsys, "m"); err == nil {
			t.Errorf("%s: Load accepted a bad set of migrations", name)
		}
	}
}

// TestCheckVersions: every SQL backend judges the recorded version the same way, with the
// sentinels of package storage.
func TestCheckVersions(t *testing.T) {
	for _, tc := range []struct {
		recorded   int
		check, new error
	}{
		{0, storage.ErrNotMigrated, nil},
		{2, storage.ErrNotMigrated, nil},
		{3, nil, nil},
		{4, storage.ErrSchemaTooNew, storage.ErrSchemaTooNew},
	} {
		if err := Check("t", tc.recorded, 3); !errors.Is(err, tc.check) || (tc.check == nil) != (err == nil) {
			t.Errorf("Check of version %d of 3 = %v, want %v", tc.recorded, err, tc.check)
		}
		if err := CheckNewer("t", tc.recorded, 3); !errors.Is(err, tc.new) || (tc.new == nil) != (err == nil) {
			t.Errorf("CheckNewer of version %d of 3 = %v, want %v", tc.recorded, err, tc.new)
		}
	}
	if err := Missing("t"); !errors.Is(err, storage.ErrNotMigrated) {
		t.Errorf("Missing = %v", err)
	}
}
