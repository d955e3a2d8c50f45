package latest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/protocol"
)

// SubjectPrefix starts every subject of a latest-state stream:
// sluice.latest.<cdc pipeline>.<schema>.<table>.<key token>...
const SubjectPrefix = "sluice.latest."

// MaxKeyBytes bounds the escaped key tokens of one subject; a longer key
// is written as one token "#" and the SHA-256 of its escaped form (hex),
// its values then only in the message.
const MaxKeyBytes = 512

// Token escapes one value as a subject token: ASCII letters, digits, '-'
// and '_' stay, every other byte is "%" and two upper-case hex digits
// (so '.', '*', '>', spaces and multi-byte UTF-8 are escaped); the empty
// string is "%", SQL NULL "%%". Decode reverses it.
func Token(v protocol.Value) string {
	if v.Null {
		return "%%"
	}
	if v.Text == "" {
		return "%"
	}
	var b strings.Builder
	for i := 0; i < len(v.Text); i++ {
		c := v.Text[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// Decode returns the value a token escapes; false for a token Token does
// not make (a hashed key's "#...").
func Decode(tok string) (protocol.Value, bool) {
	switch tok {
	case "%%":
		return protocol.NullValue, true
	case "%":
		return protocol.Text(""), true
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != '%' {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return protocol.Value{}, false
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(tok) {
			return protocol.Value{}, false
		}
		x, err := hex.DecodeString(tok[i+1 : i+3])
		if err != nil {
			return protocol.Value{}, false
		}
		b.WriteByte(x[0])
		i += 2
	}
	return protocol.Text(b.String()), true
}

// Subject returns the subject of one row: the stream's prefix for
// upstream, the schema and table as tokens, and one token per key column
// in key order (or "#<sha256>" for a key longer than MaxKeyBytes).
func Subject(upstream, schema, table string, key []protocol.Value) string {
	toks := make([]string, len(key))
	n := 0
	for i, v := range key {
		toks[i] = Token(v)
		n += len(toks[i]) + 1
	}
	k := strings.Join(toks, ".")
	if n > MaxKeyBytes {
		h := sha256.Sum256([]byte(k))
		k = "#" + hex.EncodeToString(h[:])
	}
	return TableSubject(upstream, schema, table) + "." + k
}

// TableSubject returns the subject prefix of one table's rows (without a
// trailing '.'): a subscription to it plus ".>" sees them all.
func TableSubject(upstream, schema, table string) string {
	return SubjectPrefix + upstream + "." + Token(protocol.Text(schema)) + "." + Token(protocol.Text(table))
}

// offsetSubject holds the stream sequence of SLUICE_CDC an applier
// applied last: fewer tokens than any row's subject, so never one.
func offsetSubject(upstream, pipeline string) string {
	return SubjectPrefix + upstream + "._applied." + pipeline
}

// StreamName is the name of the latest-state stream of a cdc pipeline:
// SLUICE_LATEST_ and its name in upper case, '-' as '_'.
func StreamName(upstream string) string {
	return "SLUICE_LATEST_" + strings.ToUpper(strings.ReplaceAll(upstream, "-", "_"))
}
