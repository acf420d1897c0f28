// Command report prints, before the tests run, one line per database backend saying which
// server its tests will use or that they will skip and how to enable them, since a passing
// package's skips are invisible in `go test ./...` output. `make test` runs it.
package main

import (
	"fmt"

	"github.com/chronoforge/chronoforge/internal/dbtest"
)

func main() {
	for _, k := range []*dbtest.Kind{dbtest.Postgres, dbtest.MySQL} {
		fmt.Println(dbtest.Report(k))
	}
}
