// Package chtest gives tests a ClickHouse database of their own on the
// server `make services` starts. Outside CI a test skips when the server is
// not reachable; in CI (CI=true) it fails loudly.
package chtest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// DefaultURL is the server scripts/services.sh starts.
const DefaultURL = "http://127.0.0.1:8123"

// URL is $SLUICE_TEST_CLICKHOUSE or DefaultURL.
func URL() string {
	if u := os.Getenv("SLUICE_TEST_CLICKHOUSE"); u != "" {
		return u
	}
	return DefaultURL
}

// Exec runs one statement on the server at url.
func Exec(ctx context.Context, url, query string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/", strings.NewReader(query))
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("clickhouse: %s", strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// DB creates a database for the test on the test server, dropped when the
// test ends, and returns the server's URL and the database's name.
func DB(t testing.TB) (url, db string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs ClickHouse; skipped with -short")
	}
	url = URL()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Exec(ctx, url, "SELECT 1"); err != nil {
		msg := fmt.Sprintf("ClickHouse is not reachable at %s (SLUICE_TEST_CLICKHOUSE): %v; run `make services`", url, err)
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	db = fmt.Sprintf("sluice_t_%d_%d", time.Now().UnixNano()%1e9, rand.IntN(1000))
	if _, err := Exec(ctx, url, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := Exec(ctx, url, "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Errorf("drop database %s: %v", db, err)
		}
	})
	return url, db
}
