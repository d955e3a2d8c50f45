package connectors

import (
	"fmt"
	"strconv"
	"strings"
)

// VersionNotKept is the error Versioned.Expose returns for version v when
// kept does not hold it: a permanent error saying why (such as "was never
// committed") and which versions are kept.
func VersionNotKept(v int64, why string, kept []Version) error {
	return Permanent(fmt.Errorf("version %d %s (%s)", v, why, DescribeKept(kept)))
}

// DescribeKept renders kept versions for a message: "kept: 1, 2, 3;
// exposed: 2", or "kept: none".
func DescribeKept(kept []Version) string {
	if len(kept) == 0 {
		return "kept: none"
	}
	var b strings.Builder
	b.WriteString("kept: ")
	exposed := int64(-1)
	for i, v := range kept {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatInt(v.Version, 10))
		if v.Exposed {
			exposed = v.Version
		}
	}
	if exposed >= 0 {
		fmt.Fprintf(&b, "; exposed: %d", exposed)
	}
	return b.String()
}
