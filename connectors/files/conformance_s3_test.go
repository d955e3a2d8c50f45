package files_test

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/objstore"
	"github.com/sluicehq/sluice/objstore/s3test"
)

// upload copies every file under dir to the location loc, keeping
// relative paths, and returns loc's URL.
func upload(t *testing.T, dir string, loc objstore.Location) string {
	t.Helper()
	b := s3test.Client(t)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		return b.Put(t.Context(), loc.Join(filepath.ToSlash(rel)).Key, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	return loc.String()
}

// The sink conformance suite on S3 (versitygw): staging objects, copies
// into v<N>/, the current pointer and _SUCCESS.
func TestSinkConformanceS3(t *testing.T) {
	loc := s3test.Env(t)
	testSinkConformance(t, func(_ *testing.T, name string) string { return loc.Join(name).String() })
}

// Versions and rollback on S3: v<N>/ prefixes behind the current pointer.
func TestVersionedConformanceS3(t *testing.T) {
	loc := s3test.Env(t)
	testVersionedConformance(t, func(_ *testing.T, name string) string { return loc.Join(name).String() })
}

// The source conformance suite on S3: listing, byte ranges of a big JSONL
// object read by ranged GETs, CSV, Parquet (random access), an empty
// prefix.
func TestSourceConformanceS3(t *testing.T) {
	loc := s3test.Env(t)
	testSourceConformance(t, func(t *testing.T, dir, name string) string { return upload(t, dir, loc.Join(name)) })
}

// The change log Applier on S3: every file one PUT, the pending list and
// the offset as locally.
func TestApplierConformanceS3(t *testing.T) {
	loc := s3test.Env(t)
	b := s3test.Client(t)
	conformance.TestApplier(t, conformance.ApplierHarness{
		Open: func(t *testing.T, target string) connectors.Applier {
			a, err := files.NewApplier(files.ApplierConfig{Path: loc.Join(target).String()})
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		Dump: func(t *testing.T, target string) []string {
			var out []string
			prefix := loc.Join(target).Key + "/"
			err := b.List(t.Context(), prefix, func(o objstore.Object) error {
				if !strings.HasPrefix(path.Base(o.Key), "part-") {
					return nil
				}
				data, err := b.Get(t.Context(), o.Key)
				if err != nil {
					return err
				}
				out = appendLines(out, path.Dir(strings.TrimPrefix(o.Key, prefix)), data)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		},
		Events: conformance.ChangeEvents(),
	})
}
