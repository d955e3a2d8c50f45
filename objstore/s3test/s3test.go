// Package s3test gives tests a prefix of their own in a bucket of the S3
// server `make services` starts (versitygw on 127.0.0.1:7070), with the
// standard AWS environment pointed at it, so that code under test finds the
// server the way it finds AWS. Outside CI a test skips when the server is
// not reachable; in CI (CI=true) it fails loudly.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/objstore"
)

// The test server scripts/services.sh starts, and its root credentials (a
// test server's, never a product's).
const (
	DefaultEndpoint = "http://127.0.0.1:7070"
	AccessKey       = "sluice-test"
	SecretKey       = "sluice-test-secret"
	// Bucket is the bucket the tests share, each under its own prefix.
	Bucket = "sluice-test"
)

// Endpoint is $SLUICE_TEST_S3 or DefaultEndpoint.
func Endpoint() string {
	if u := os.Getenv("SLUICE_TEST_S3"); u != "" {
		return u
	}
	return DefaultEndpoint
}

// Env points the standard AWS environment at the test server for the rest
// of the test (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY; no profile, no shared files, no instance
// metadata), makes sure the shared bucket exists,
// and returns an s3:// location that is the test's alone (removed, with
// everything under it, when the test ends). It skips the test when the
// server is not reachable, or fails it in CI.
func Env(t testing.TB) objstore.Location {
	t.Helper()
	return env(t, func(k, v string) { t.Setenv(k, v) })
}

// SharedEnv is Env for tests that run in parallel, where t.Setenv cannot
// be used: it sets the same environment for the rest of the test binary's
// run (every test of the binary then finds the test server as AWS),
// and returns an s3:// location that is the test's alone.
func SharedEnv(t testing.TB) objstore.Location {
	t.Helper()
	// The values are the same on every call: a test reading the
	// environment while another sets it finds them either way.
	return env(t, func(k, v string) { os.Setenv(k, v) })
}

func env(t testing.TB, setenv func(k, v string)) objstore.Location {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the S3 test server; skipped with -short")
	}
	ep := Endpoint()
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		t.Fatalf("SLUICE_TEST_S3=%q is not an http(s) URL", ep)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		msg := "S3 test server not reachable at " + ep + " (run `make services`): " + err.Error()
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	conn.Close()
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_S3": ep, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": AccessKey, "AWS_SECRET_ACCESS_KEY": SecretKey,
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_ENDPOINT_URL": "",
		"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_EC2_METADATA_DISABLED": "true",
	} {
		setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := Client(t)
	if err := b.CreateBucket(ctx); err != nil {
		t.Fatalf("S3 test server at %s: %v", ep, err)
	}
	var r [4]byte
	rand.Read(r[:])
	name := strings.Trim(nonAlnum.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	loc := objstore.Location{Bucket: Bucket, Key: name + "-" + hex.EncodeToString(r[:])}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.DeletePrefix(ctx, loc.Key+"/"); err != nil {
			t.Logf("remove %s: %v", loc, err)
		}
	})
	return loc
}

var nonAlnum = regexp.MustCompile(`[^a-z0-9]+`)

// Client returns a client of the shared test bucket, set up from the
// environment Env set.
func Client(t testing.TB) *objstore.Bucket {
	t.Helper()
	b, err := objstore.Open(context.Background(), objstore.Config{}, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
