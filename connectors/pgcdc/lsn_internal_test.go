package pgcdc

import (
	"math"
	"testing"

	"github.com/jackc/pglogrepl"
)

// formatLSN writes what pglogrepl.LSN.String writes (upper-case hex, the
// form PostgreSQL prints), without fmt.
func TestFormatLSN(t *testing.T) {
	for _, l := range []pglogrepl.LSN{0, 1, 0xA, 0x16B3748, 0x5_B9517AA0, 0xABCDEF01_23456789, math.MaxUint64} {
		if got, want := formatLSN(l), l.String(); got != want {
			t.Errorf("formatLSN(%d) = %q, want %q", uint64(l), got, want)
		}
	}
}
