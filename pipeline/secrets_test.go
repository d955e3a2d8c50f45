package pipeline

import (
	"strings"
	"testing"
)

// Issue 18 item 4: a password written into a spec is refused, naming the
// field and its line, unless the spec says allow_literal_secrets: true; a
// reference is accepted.
func TestLiteralSecretRefused(t *testing.T) {
	spec := func(dsn, extra string) string {
		return "name: shop-cdc\npattern: cdc\nsource:\n  kind: db\n  dsn: " + dsn + "\n  tables: [public.orders]\n" + extra
	}
	_, err := Load([]byte(spec("postgres://u:hunter22@h/db", "")), "shop.yaml", streamRegistry(), nil)
	if err == nil || !strings.Contains(err.Error(), "line 5: source.dsn: holds a password as written") || strings.Contains(err.Error(), "hunter22") {
		t.Fatalf("literal password: err = %v, want source.dsn on line 5 refused without the password", err)
	}
	_, err = Load([]byte(spec("host=h user=u password=hunter22", "")), "shop.yaml", streamRegistry(), nil)
	if err == nil || !strings.Contains(err.Error(), "source.dsn: holds a password as written") {
		t.Fatalf("password= setting: err = %v", err)
	}
	s, err := Load([]byte(spec("postgres://u:hunter22@h/db", "allow_literal_secrets: true\n")), "shop.yaml", streamRegistry(), nil)
	if err != nil || !s.AllowLiteralSecrets {
		t.Fatalf("allowed: %+v %v", s, err)
	}
	for _, dsn := range []string{"postgres://u:${SLUICE_PG_PASSWORD}@h/db", "${SLUICE_PG_DSN}", "postgres://u@h/db"} {
		if _, err := Load([]byte(spec(dsn, "")), "shop.yaml", streamRegistry(), nil); err != nil {
			t.Errorf("dsn %s: %v", dsn, err)
		}
	}
	if _, err := Parse([]byte(spec("${SLUICE_PG_DSN}", "allow_literal_secrets: yes please\n")), "shop.yaml"); err == nil || !strings.Contains(err.Error(), "allow_literal_secrets") {
		t.Fatalf("a non-boolean: err = %v", err)
	}
}
