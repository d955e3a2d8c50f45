package connectors

import (
	"fmt"
	"strings"
	"time"
)

// ParseDuration parses a duration as specs and connector configurations
// spell it: a Go duration ("90m", "1h30m") or a whole number of days ("1d",
// "7d").
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok && n != "" && !strings.ContainsAny(n, "hmsuµn.") {
		var days int64
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || fmt.Sprint(days) != n || days > 100_000 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
