package mysql

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// TestConformance runs the shared storage suite, each case in a fresh database of its own,
// all over one pool of the package (at the server's default isolation, REPEATABLE READ).
func TestConformance(t *testing.T) {
	db := sharedDB(t)
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return newStore(t, db)
	})
}

// TestConformanceReadCommitted runs the suite again over sessions at READ COMMITTED, which
// many MySQL deployments choose: the backend relies on locking reads, not on snapshots, so
// it keeps every promise at either level.
func TestConformanceReadCommitted(t *testing.T) {
	if testing.Short() {
		t.Skip("the suite at the default isolation level is enough for -short")
	}
	cfg := serverConfig(t)
	// MySQL 8 names the variable transaction_isolation; MariaDB before 11.1, tx_isolation.
	variable := "transaction_isolation"
	var level string
	if err := sharedDB(t).QueryRowContext(context.Background(), "SELECT @@transaction_isolation").Scan(&level); err != nil {
		variable = "tx_isolation"
	}
	cfg.Params = map[string]string{variable: "'READ-COMMITTED'"}
	db := openDB(t, cfg, 8)
	require.NoError(t, db.QueryRowContext(context.Background(), "SELECT @@"+variable).Scan(&level))
	require.Equal(t, "READ-COMMITTED", level)
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return newStore(t, db)
	}, storagetest.FlowFanOutSize(1000)) // the full fan-out ran in TestConformance
}

// FuzzCreate: see storagetest.FuzzCreate; names and keys go through VARBINARY columns.
func FuzzCreate(f *testing.F) { storagetest.FuzzCreate(f, newStore(f, sharedDB(f))) }
