// Package pgtest gives a test a PostgreSQL database of its own, on the
// server named by SWITCHBOARD_TEST_DATABASE_URL (.ci/postgres starts one).
// Without that server the test is skipped, except in CI (CI=true), where
// it fails: what needs PostgreSQL is always tested there.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env names the server's URL.
const Env = "SWITCHBOARD_TEST_DATABASE_URL"

// Available reports whether a server is given, failing the test in CI
// when it is not.
func Available(t testing.TB) bool {
	t.Helper()
	if os.Getenv(Env) != "" {
		return true
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: in CI, .ci/run starts PostgreSQL with .ci/postgres and sets it", Env)
	}
	return false
}

// URL makes a new, empty database and returns its URL; it is dropped when
// the test ends. Without a server the test is skipped (failed in CI).
func URL(t testing.TB) string {
	t.Helper()
	if !Available(t) {
		t.Skipf("%s is not set: no PostgreSQL to test against (eval \"$(.ci/postgres start)\" starts one)", Env)
	}
	admin := os.Getenv(Env)
	var b [6]byte
	rand.Read(b[:])
	name := "sbtest_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connecting to %s: %v", Env, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("creating a test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		c.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("%s: %v", Env, err)
	}
	u.Path = "/" + name
	return u.String()
}
