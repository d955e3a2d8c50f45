package connectors

import (
	"encoding/json"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Redacted replaces a secret in text that Redact returns.
const Redacted = "xxxxx"

var (
	// urlPasswordRE matches the password of a URL's user info:
	// scheme://user:password@host.
	urlPasswordRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s"'` + "`" + `]*:)([^@\s"'` + "`" + `/]+)(@)`)
	// settingRE matches a secret setting written key=value, in a
	// connection string or a URL's query.
	settingRE = regexp.MustCompile(`(?i)\b(password|passwd|pwd|secret|token|api_key|apikey|secret_key|access_key|sslpassword)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&"'` + "`" + `\\;]+)`)
	// jsonFieldRE and yamlFieldRE match a secret field of a JSON object
	// and of a YAML mapping.
	jsonFieldRE = regexp.MustCompile(`(?i)("(?:password|passwd|secret|token|api_key|apikey|secret_key|access_key)"\s*:\s*")((?:[^"\\]|\\.)*)(")`)
	yamlFieldRE = regexp.MustCompile(`(?im)^(\s*(?:password|passwd|secret|token|api_key|apikey|secret_key|access_key)\s*:[ \t]*)([^\s#{][^#\n]*?)([ \t]*(?:#.*)?)$`)
)

// Redact returns s with the secrets it may hold replaced by Redacted, for
// anything shown to people (status, errors, dead letters, stored specs):
// the password of a URL (postgres://user:secret@host), secret settings
// written key=value (password=secret in a connection string or a query),
// and secret fields of JSON or YAML (password, token, secret, ...). A
// `${NAME}` reference is not a secret and stays as written.
func Redact(s string) string {
	keep := func(v string) bool { return v == Redacted || isReference(v) }
	s = urlPasswordRE.ReplaceAllStringFunc(s, func(m string) string {
		p := urlPasswordRE.FindStringSubmatch(m)
		if keep(p[2]) {
			return m
		}
		return p[1] + Redacted + p[3]
	})
	s = settingRE.ReplaceAllStringFunc(s, func(m string) string {
		p := settingRE.FindStringSubmatch(m)
		if keep(strings.Trim(p[3], "'")) {
			return m
		}
		return p[1] + p[2] + Redacted
	})
	s = jsonFieldRE.ReplaceAllStringFunc(s, func(m string) string {
		p := jsonFieldRE.FindStringSubmatch(m)
		if p[2] == "" || keep(p[2]) {
			return m
		}
		return p[1] + Redacted + p[3]
	})
	return yamlFieldRE.ReplaceAllStringFunc(s, func(m string) string {
		p := yamlFieldRE.FindStringSubmatch(m)
		if keep(strings.Trim(p[2], `"'`)) {
			return m
		}
		return p[1] + Redacted + p[3]
	})
}

// isReference reports whether v is a `${NAME}` reference, expanded where a
// connector opens.
func isReference(v string) bool {
	return envRE.MatchString(v) && strings.TrimSpace(envRE.ReplaceAllString(v, "")) == ""
}

// LiteralSecrets returns the fields of a connector configuration (dotted
// paths, sorted) that hold a secret as a literal instead of a `${NAME}`
// reference: a DSN or URL with a password, a password= setting, a field
// named password, token or secret. Such a value would be stored in the
// cluster's state and travel in every task.
func LiteralSecrets(config json.RawMessage) []string {
	var v any
	if len(config) == 0 || json.Unmarshal(config, &v) != nil {
		return nil
	}
	var out []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case string:
			if x != "" && (Redact(x) != x || secretKey(path) && !isReference(x)) {
				out = append(out, path)
			}
		case map[string]any:
			for k, e := range x {
				walk(joinPath(path, k), e)
			}
		case []any:
			for i, e := range x {
				walk(path+"["+strconv.Itoa(i)+"]", e)
			}
		}
	}
	walk("", v)
	sort.Strings(out)
	return out
}

// secretKey reports whether the last element of a dotted path names a
// secret.
func secretKey(path string) bool {
	k := path[strings.LastIndexAny(path, ".]")+1:]
	switch strings.ToLower(k) {
	case "password", "passwd", "secret", "token", "api_key", "apikey", "secret_key", "access_key":
		return true
	}
	return false
}
