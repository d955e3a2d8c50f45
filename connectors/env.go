package connectors

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// EnvPrefix is the prefix of the environment variables a spec's `${NAME}`
// references may always name. Other variables are expanded only when the
// process allows them by name (Registry.AllowEnv).
const EnvPrefix = "SLUICE_"

// minScrubLen is the shortest value Registry.Scrub replaces: a shorter one
// (a flag, a format name) would rewrite ordinary words of messages, and is
// no secret.
const minScrubLen = 4

// AllowEnv lets specs refer to the named environment variables besides
// those starting with EnvPrefix (the --allow-env flag and SLUICE_ALLOW_ENV
// of the sluice commands). Empty names are ignored.
func (r *Registry) AllowEnv(names ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		if n = strings.TrimSpace(n); n != "" {
			if r.allowEnv == nil {
				r.allowEnv = map[string]bool{}
			}
			r.allowEnv[n] = true
		}
	}
}

// EnvAllowed reports whether a spec may refer to the environment variable
// name.
func (r *Registry) EnvAllowed(name string) bool {
	if strings.HasPrefix(name, EnvPrefix) {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.allowEnv[name]
}

// CheckEnv returns an error naming the variable (never its value) when
// specs may not refer to it (EnvAllowed), nil when they may.
func (r *Registry) CheckEnv(name string) error {
	if r.EnvAllowed(name) {
		return nil
	}
	return fmt.Errorf("${%s}: environment variable %s cannot be used in a spec: only %s* variables and those named by --allow-env or SLUICE_ALLOW_ENV are expanded", name, name, EnvPrefix)
}

// notAllowed is the error on a field referring to a variable the process
// does not let specs expand.
func (r *Registry) notAllowed(field, name string) *FieldError {
	return &FieldError{Field: field, Msg: r.CheckEnv(name).Error()}
}

// Scrub returns text with every value a `${NAME}` reference expanded to
// in this process (when opening a connector) replaced by the reference as
// written, and the passwords Redact finds replaced by Redacted: for
// anything that leaves the process (errors in results and status, logs,
// traces). Values shorter than 4 bytes are left alone.
func (r *Registry) Scrub(text string) string {
	return Redact(r.secrets.scrub(text))
}

// ScrubError returns err with its message scrubbed as Scrub does; it
// unwraps to err, so errors.Is and errors.As still see what err is. Nil
// stays nil.
func (r *Registry) ScrubError(err error) error {
	err = r.secrets.scrubErr(err)
	if err == nil {
		return nil
	}
	if msg := Redact(err.Error()); msg != err.Error() {
		return &scrubbedError{err: err, msg: msg}
	}
	return err
}

// scrubbedError is an error whose message had expanded values replaced.
type scrubbedError struct {
	err error
	msg string
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// scrubber remembers the values `${NAME}` references expanded to, to
// replace them by the references in text shown to people.
type scrubber struct {
	mu     sync.Mutex
	min    int
	refs   map[string]string // value -> "${NAME}"
	values []string          // the keys of refs, longest first
}

// add remembers that ref expanded to value.
func (s *scrubber) add(name, value string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The value as is, as %q writes it, as JSON writes it (a message may
	// quote a configuration marshalled again), and that quoted by %q.
	forms := []string{value, quoted(value)}
	if j, err := json.Marshal(value); err == nil {
		forms = append(forms, string(j[1:len(j)-1]), quoted(string(j[1:len(j)-1])))
	}
	// The password of a URL may be quoted without the rest.
	for _, m := range urlPasswordRE.FindAllStringSubmatch(value, -1) {
		forms = append(forms, m[2])
	}
	for _, v := range forms {
		if len(v) < s.min || v == "" {
			continue
		}
		if _, ok := s.refs[v]; ok {
			continue
		}
		if s.refs == nil {
			s.refs = map[string]string{}
		}
		s.refs[v] = "${" + name + "}"
		s.values = append(s.values, v)
	}
	slices.SortFunc(s.values, func(a, b string) int { return len(b) - len(a) })
}

// quoted is s as %q writes it, without the quotes.
func quoted(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// scrub replaces every remembered value in text by its reference.
func (s *scrubber) scrub(text string) string {
	if s == nil {
		return text
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.values {
		if strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, s.refs[v])
		}
	}
	return text
}

// scrubErr returns err with the remembered values of its message replaced.
// The errors joined in err are scrubbed one by one and joined again, and
// the message of the *FieldError err wraps is scrubbed in place (it is the
// error a connector made for this call), so that what errors.As finds in
// the result is scrubbed too.
func (s *scrubber) scrubErr(err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = s.scrubErr(e)
		}
		return errors.Join(out...)
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		fe.Msg = s.scrub(fe.Msg)
	}
	if msg := s.scrub(err.Error()); msg != err.Error() {
		return &scrubbedError{err: err, msg: msg}
	}
	return err
}
