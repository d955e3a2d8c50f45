package iceberg

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// sluice apply --check on Iceberg: a sink's table is created by the first
// run (the check creates no catalog), then described; a source's table
// must be in the catalog, and its snapshot_id in the table; a warehouse on
// S3 must be a bucket that exists.
func TestCheck(t *testing.T) {
	ctx := t.Context()
	cfg := localConfig(t, "check")
	req := connectors.CheckRequest{Pipeline: "p"}
	fieldErr := func(err error, field, msg string) {
		t.Helper()
		var fe *connectors.FieldError
		if !errors.As(err, &fe) || fe.Field != field || !strings.Contains(fe.Msg, msg) {
			t.Errorf("%v: want a problem with %s saying %q", err, field, msg)
		}
	}

	s := newSink(t, cfg)
	defer s.Close()
	found, err := s.Check(ctx, req)
	if err != nil || !strings.Contains(found, "table test.check: created by the first run in "+cfg.Warehouse) {
		t.Fatalf("sink check before the first run: %q %v", found, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Warehouse, "catalog.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the check made the catalog: %v", err)
	}
	src, err := NewSource(SourceConfig{Config: cfg.Config})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = src.Check(ctx, req)
	fieldErr(err, "table", "table test.check is not in the catalog")
	// A readiness pipeline may watch a table that is not created yet.
	if found, err := src.Check(ctx, connectors.CheckRequest{Pipeline: "p", Pattern: protocol.PatternReadiness}); err != nil || !strings.Contains(found, "not in the catalog yet") {
		t.Errorf("readiness check of a table not created yet: %q %v", found, err)
	}

	if err := s.CheckSchema(ctx, idv); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]connectors.Checker{"sink": s, "source": src} {
		if found, err := c.Check(ctx, req); err != nil || found != "table test.check: 2 columns, no snapshot yet" {
			t.Errorf("%s check of the new table: %q %v", name, found, err)
		}
	}
	other, err := NewSource(SourceConfig{Config: cfg.Config, SnapshotID: 42})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = other.Check(ctx, req)
	fieldErr(err, "snapshot_id", "snapshot 42 is not in table test.check")

	s3cfg, bucket := s3Config(t, "check")
	s3sink := newSink(t, s3cfg)
	defer s3sink.Close()
	if found, err := s3sink.Check(ctx, req); err != nil || !strings.Contains(found, "created by the first run in s3://"+bucket+"/wh") {
		t.Errorf("sink check on S3: %q %v", found, err)
	}
	s3cfg.Warehouse = "s3://" + bucket + "-missing/wh"
	missing := newSink(t, s3cfg)
	defer missing.Close()
	_, err = missing.Check(ctx, req)
	fieldErr(err, "warehouse", "bucket "+bucket+"-missing")
	t.Logf("a missing bucket: %v", err)
}
