package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// TestConformance runs the shared storage suite, each case on a migrated store in a schema
// of its own over the package's shared pool.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return newStore(t, nil)
	})
}

// TestConformanceSimpleProtocol runs the suite again over a pool that sends every statement
// with the simple protocol, arguments encoded by pgx, as applications behind a transaction
// pooler (PgBouncer) configure it: no statement of the store depends on prepared statements.
func TestConformanceSimpleProtocol(t *testing.T) {
	if testing.Short() {
		t.Skip("the suite runs once in short mode")
	}
	pool := ownPool(t, 8, func(c *pgxpool.Config) {
		c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	})
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return newStore(t, pool)
	}, storagetest.FlowFanOutSize(1000)) // the full fan-out ran in TestConformance
}

// FuzzCreate: see storagetest.FuzzCreate; text goes through the database's UTF8 columns.
func FuzzCreate(f *testing.F) { storagetest.FuzzCreate(f, newStore(f, nil)) }
