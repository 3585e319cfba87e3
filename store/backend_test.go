package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/switchboard-dev/switchboard/internal/pgtest"
)

// backend is a store under test: each test runs against SQLite and
// PostgreSQL alike.
type backend struct {
	// open opens the test's database, again on each call.
	open func() Store
	// count runs a query that counts, straight on the database.
	count func(query string) int
	// owned: one process owns the database, so a reopen lets every claim
	// go; shared databases keep them until their leases run out.
	owned bool
}

func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sb.db")
		fn(t, backend{
			open: func() Store { return open(t, path) },
			count: func(q string) int {
				db, err := sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)")
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				var n int
				if err := db.QueryRow(q).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			},
			owned: true,
		})
	})
	t.Run("postgres", func(t *testing.T) {
		u := pgtest.URL(t)
		fn(t, backend{
			open: func() Store {
				s, err := OpenPostgres(context.Background(), u)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			count: func(q string) int {
				ctx := context.Background()
				c, err := pgx.Connect(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(ctx)
				var n int
				if err := c.QueryRow(ctx, q).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			},
		})
	})
}
