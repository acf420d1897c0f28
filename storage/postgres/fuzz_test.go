package postgres

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// The store-level fuzz targets of storagetest, each over a migrated store in a schema of its
// own, so every input goes through the database's columns; and the targets of the
// package's own outside data: the names New takes and the tags column it decodes.
// FuzzCreate is in conformance_test.go.

// FuzzList: see storagetest.FuzzList.
func FuzzList(f *testing.F) { storagetest.FuzzList(f, newStore(f, nil)) }

// FuzzSendMessage: see storagetest.FuzzSendMessage.
func FuzzSendMessage(f *testing.F) { storagetest.FuzzSendMessage(f, newStore(f, nil)) }

// FuzzPutFlow: see storagetest.FuzzPutFlow.
func FuzzPutFlow(f *testing.F) { storagetest.FuzzPutFlow(f, newStore(f, nil)) }

// FuzzClaim: see storagetest.FuzzClaim.
func FuzzClaim(f *testing.F) { storagetest.FuzzClaim(f, newStore(f, nil)) }

// FuzzNew gives New any schema name and table prefix: it returns an error wrapping
// storage.ErrInvalid unless both are identifiers (^[a-z_][a-z0-9_]{0,40}$), and otherwise a
// store whose every table name and NOTIFY channel is quoted or valid as it is, so no name
// can break out of a statement. New does not touch the database, so the pool never connects.
func FuzzNew(f *testing.F) {
	cfg, err := pgxpool.ParseConfig("postgres://fuzz@127.0.0.1:1/fuzz?connect_timeout=1")
	if err != nil {
		f.Fatalf("parse the placeholder DSN: %v", err)
	}
	pool, err := pgxpool.NewWithConfig(f.Context(), cfg)
	if err != nil {
		f.Fatalf("pool over the placeholder DSN: %v", err)
	}
	f.Cleanup(pool.Close)
	f.Add("", "chrono_")
	f.Add("app", "x_")
	f.Add("App", "chrono_")
	f.Add(`a"b`, "p")
	f.Add("s", "p\n")
	f.Add("s\n", "p")
	f.Add(strings.Repeat("s", 41), strings.Repeat("p", 41))
	f.Add(strings.Repeat("s", 42), "p")
	f.Add("_", "9")
	f.Fuzz(func(t *testing.T, schema, prefix string) {
		var opts []Option
		if schema != "" {
			opts = append(opts, WithSchema(schema))
		}
		opts = append(opts, WithTablePrefix(prefix))
		s, err := New(pool, opts...)
		valid := (schema == "" || identifier.MatchString(schema)) && identifier.MatchString(prefix)
		if err != nil {
			if !errors.Is(err, storage.ErrInvalid) || valid {
				t.Fatalf("New(schema %q, prefix %q): %v (valid names: %v)", schema, prefix, err, valid)
			}
			return
		}
		defer func() { _ = s.Close() }()
		if !valid {
			t.Fatalf("New(schema %q, prefix %q) accepted names that are not identifiers", schema, prefix)
		}
		if s.Schema() != schema || s.TablePrefix() != prefix {
			t.Fatalf("New(schema %q, prefix %q): store has schema %q, prefix %q", schema, prefix, s.Schema(), s.TablePrefix())
		}
		for _, table := range []string{s.workflows, s.steps, s.errors, s.messages, s.versions, s.flows, s.flowNames} {
			if strings.Count(table, `"`) != 2+2*min(len(schema), 1) {
				t.Fatalf("New(schema %q, prefix %q): table name %s is not quoted cleanly", schema, prefix, table)
			}
		}
		if ch := s.Channel(); len(ch) > 63 || !identifier.MatchString(ch[:min(len(ch), 41)]) {
			t.Fatalf("New(schema %q, prefix %q): NOTIFY channel %q is not a short identifier", schema, prefix, ch)
		}
	})
}

// FuzzDecodeTags gives the tags column's decoder any bytes: it never panics and returns nil
// or a non-empty map that encodeTags writes back to the same tags.
func FuzzDecodeTags(f *testing.F) {
	f.Add([]byte(nil))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"tenant":"acme","k":""}`))
	f.Add([]byte(`{"n":1}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`null`))
	f.Add([]byte("{\"\\u0000\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		tags := decodeTags(raw)
		if tags == nil {
			return
		}
		if len(tags) == 0 {
			t.Fatalf("decodeTags(%q) = an empty, non-nil map", raw)
		}
		if again := decodeTags([]byte(encodeTags(tags))); !maps.Equal(again, tags) {
			t.Fatalf("decodeTags(%q) = %v, which encodes and decodes back as %v", raw, tags, again)
		}
	})
}
