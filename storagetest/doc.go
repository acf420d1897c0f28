// Package storagetest is the conformance suite for storage.Storage backends.
//
// A backend author proves a backend with one call from an ordinary test:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Storage {
//			s, err := mybackend.Open(filepath.Join(t.TempDir(), "test.db"))
//			require.NoError(t, err)
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The factory must return a fresh, empty store each time it is called (a new file, schema or
// database) and register its own cleanup with t.Cleanup. The storage cases run in parallel,
// each against its own store, so a backend is also exercised under concurrent use; run the
// suite with -race.
//
// Every case passes explicit times (a fixed base time plus offsets) in its requests, as the
// contract asks, so when workflows are due does not depend on the machine's clock. Leases
// expire by the store's own clock, which no request moves: the cases that need a lease to
// expire give it a short real TTL and wait, polling the store with a deadline, until the
// store's clock has passed it. A failing case names the promise of the storage.Storage
// contract that the backend broke.
package storagetest
