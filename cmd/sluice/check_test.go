package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// --from and --to are two times or two integers (a range of values).
func TestParseRange(t *testing.T) {
	from, to, values, err := parseRange("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
	if err != nil || values != nil || to.Sub(from) != 24*time.Hour {
		t.Fatalf("times: %v %v %v %v", from, to, values, err)
	}
	if _, _, values, err = parseRange("0", "5000000"); err != nil || values == nil || *values != protocol.ValueWindow(0, 5000000) {
		t.Fatalf("integers: %v %v", values, err)
	}
	for _, bad := range [][2]string{{"0", "2026-01-01T00:00:00Z"}, {"yesterday", "today"}, {"", ""}} {
		if _, _, _, err := parseRange(bad[0], bad[1]); err == nil {
			t.Errorf("parseRange(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if err := run(context.Background(), []string{"check", "--from", "0", "--to", "1"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "name the pipeline") {
		t.Errorf("check without a pipeline: %v", err)
	}
}
