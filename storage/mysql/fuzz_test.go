package mysql

import (
	"database/sql"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// The store-level fuzz targets of storagetest, each over a migrated store in a database of
// its own, so every input goes through the server's columns; and the targets of the
// package's own outside data: the names New takes and the stored columns it decodes (tags,
// a flow's claim log). FuzzCreate is in conformance_test.go.

// FuzzList: see storagetest.FuzzList.
func FuzzList(f *testing.F) { storagetest.FuzzList(f, newStore(f, sharedDB(f))) }

// FuzzSendMessage: see storagetest.FuzzSendMessage.
func FuzzSendMessage(f *testing.F) { storagetest.FuzzSendMessage(f, newStore(f, sharedDB(f))) }

// FuzzPutFlow: see storagetest.FuzzPutFlow.
func FuzzPutFlow(f *testing.F) { storagetest.FuzzPutFlow(f, newStore(f, sharedDB(f))) }

// FuzzClaim: see storagetest.FuzzClaim.
func FuzzClaim(f *testing.F) { storagetest.FuzzClaim(f, newStore(f, sharedDB(f))) }

// FuzzNew gives New any database name and table prefix: it returns an error wrapping
// storage.ErrInvalid unless both are identifiers (^[a-z_][a-z0-9_]{0,40}$), and otherwise a
// store whose every table name is quoted cleanly, so no name can break out of a statement.
// New does not touch the database, so the pool never connects.
func FuzzNew(f *testing.F) {
	c, err := gomysql.NewConnector(&gomysql.Config{Net: "tcp", Addr: "127.0.0.1:1", DBName: "fuzz", Timeout: time.Second})
	if err != nil {
		f.Fatalf("connector over the placeholder address: %v", err)
	}
	db := sql.OpenDB(c)
	f.Cleanup(func() { _ = db.Close() })
	f.Add("", "chrono_")
	f.Add("app", "x_")
	f.Add("App", "chrono_")
	f.Add("a`b", "p")
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
		s, err := New(db, opts...)
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
		for _, table := range []string{s.workflows, s.steps, s.errors, s.messages, s.versions, s.flows, s.flowNames} {
			if strings.Count(table, "`") != 2+2*min(len(schema), 1) || len(table) > 2*64+5 {
				t.Fatalf("New(schema %q, prefix %q): table name %s is not quoted cleanly", schema, prefix, table)
			}
		}
	})
}

// FuzzScanTags gives the tags column's scanner any bytes, as []byte and as string: it
// returns an error naming the column, or nil or a non-empty map, and never panics.
func FuzzScanTags(f *testing.F) {
	f.Add([]byte(nil))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"tenant":"acme","k":""}`))
	f.Add([]byte(`{"n":1}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`null`))
	f.Add([]byte("{\"\\u0000\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var fromBytes, fromString map[string]string
		errBytes := tagsScanner{&fromBytes}.Scan(raw)
		errString := tagsScanner{&fromString}.Scan(string(raw))
		if (errBytes == nil) != (errString == nil) || !maps.Equal(fromBytes, fromString) {
			t.Fatalf("tags %q scan as bytes to %v (%v), as a string to %v (%v)", raw, fromBytes, errBytes, fromString, errString)
		}
		if errBytes != nil {
			if !strings.Contains(errBytes.Error(), "tags") {
				t.Fatalf("tags %q: error %q does not name the column", raw, errBytes)
			}
			return
		}
		if fromBytes != nil && len(fromBytes) == 0 {
			t.Fatalf("tags %q scan to an empty, non-nil map", raw)
		}
	})
}

// FuzzParseClaimLog gives a flow's stored claim log any bytes: parseClaimLog returns an
// error naming it or a log, and the rate window over that log never panics and never counts
// claims the log does not hold.
func FuzzParseClaimLog(f *testing.F) {
	f.Add([]byte(nil), int64(time.Second))
	f.Add([]byte(`[[1700000000000000,2],[1700000000500000,1]]`), int64(time.Second))
	f.Add([]byte(`[]`), int64(time.Minute))
	f.Add([]byte(`[[1,2,3]]`), int64(1))
	f.Add([]byte(`[[9223372036854775807,9223372036854775807],[0,1]]`), int64(-1))
	f.Add([]byte(`{"a":1}`), int64(0))
	f.Fuzz(func(t *testing.T, raw []byte, per int64) {
		l, err := parseClaimLog(raw)
		if err != nil {
			if !strings.Contains(err.Error(), "claim_log") {
				t.Fatalf("claim log %q: error %q does not name the column", raw, err)
			}
			return
		}
		now := time.UnixMicro(1700000001000000)
		rest, _ := l.window(now, time.Duration(per))
		if len(rest) > len(l) {
			t.Fatalf("window of %q kept %d entries of %d", raw, len(rest), len(l))
		}
	})
}
