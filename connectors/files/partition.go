package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// SuccessFile is the readiness marker of a partition (and of a committed
// dataset version or window).
const SuccessFile = "_SUCCESS"

// placeholders maps the placeholders of a layout to how they render a UTC
// time.
var placeholders = map[string]string{
	"date":  "2006-01-02",
	"year":  "2006",
	"month": "01",
	"day":   "02",
	"hour":  "15",
}

// layout is a parsed partition layout, such as "date={date}/hour={hour}".
type layout struct {
	// parts alternate literal text and placeholders: a placeholder is
	// stored as its Go time layout, flagged in isVar.
	parts []string
	isVar []bool
	// size is the length of one partition: 1h or 24h.
	size time.Duration
}

// parseLayout checks a layout: a relative, clean, slash-separated path
// whose placeholders name a day and optionally an hour.
func parseLayout(s string) (layout, error) {
	var l layout
	if s == "" {
		return l, errors.New("is empty")
	}
	if strings.HasPrefix(s, "/") || path.Clean(s) != s || s == "." || strings.HasPrefix(s, "../") || s == ".." || strings.Contains(s, "/../") {
		return l, fmt.Errorf("%q is not a clean relative path (example: \"date={date}/hour={hour}\")", s)
	}
	seen := map[string]bool{}
	rest := s
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			l.parts, l.isVar = append(l.parts, rest), append(l.isVar, false)
			break
		}
		if rest[i] == '}' {
			return l, fmt.Errorf("%q has a '}' without its '{'", s)
		}
		if i > 0 {
			l.parts, l.isVar = append(l.parts, rest[:i]), append(l.isVar, false)
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return l, fmt.Errorf("%q has a '{' without its '}'", s)
		}
		name := rest[i+1 : i+j]
		goLayout, ok := placeholders[name]
		if !ok {
			return l, fmt.Errorf("unknown placeholder {%s} in %q (known: {date}, {year}, {month}, {day}, {hour})", name, s)
		}
		seen[name] = true
		l.parts, l.isVar = append(l.parts, goLayout), append(l.isVar, true)
		rest = rest[i+j+1:]
	}
	if !seen["date"] && !(seen["year"] && seen["month"] && seen["day"]) {
		return l, fmt.Errorf("%q does not name a day: use {date}, or {year}, {month} and {day}", s)
	}
	l.size = 24 * time.Hour
	if seen["hour"] {
		l.size = time.Hour
	}
	return l, nil
}

// render returns the relative path of the partition that starts at t.
func (l layout) render(t time.Time) string {
	t = t.UTC()
	var b strings.Builder
	for i, p := range l.parts {
		if l.isVar[i] {
			b.WriteString(t.Format(p))
		} else {
			b.WriteString(p)
		}
	}
	return b.String()
}

// PartitionPath returns the directory of the partition of a source
// configured with layout (see SourceConfig.Layout) under root that the
// window w is, or an error when w is not exactly one partition.
func PartitionPath(root, layoutText string, w connectors.Window) (string, error) {
	l, err := parseLayout(layoutText)
	if err != nil {
		return "", err
	}
	rel, err := l.partition(w)
	if err != nil {
		return "", err
	}
	return joinPath(root, rel), nil
}

// partition returns the relative path of the one partition the window w
// is; w must start on a partition boundary (UTC) and last one partition.
func (l layout) partition(w connectors.Window) (string, error) {
	from, to := w.From.UTC(), w.To.UTC()
	if !from.Truncate(l.size).Equal(from) || to.Sub(from) != l.size {
		return "", connectors.Permanent(fmt.Errorf("window %s is not one partition of %s (partitions start every %s from midnight UTC)", w, l.size, l.size))
	}
	return l.render(from), nil
}

// partitionDirs returns the directory of the partition that w is and of the
// partition after it.
func (s *Source) partitionDirs(w connectors.Window) (dir, next string, err error) {
	rel, err := s.layout.partition(w)
	if err != nil {
		return "", "", fmt.Errorf("source %s, layout %q: %w", s.cfg.Path, s.cfg.Layout, err)
	}
	nextRel := s.layout.render(w.From.Add(s.layout.size))
	return joinPath(s.path(), rel), joinPath(s.path(), nextRel), nil
}

var _ connectors.Readiness = (*Source)(nil)

// Ready reports whether the partition of req's window is complete: it holds
// a _SUCCESS file, or (ready: next_partition) the next partition's
// directory exists. what is the partition's directory. A source without a
// layout, or a run without a window, is always ready. A window that is not
// exactly one partition is a permanent error. ctx is not used: the check
// is two stat calls (on S3, two requests, which ctx bounds).
func (s *Source) Ready(ctx context.Context, req connectors.PlanRequest) (bool, string, error) {
	if s.layout == nil || req.Window == nil {
		return true, s.path(), nil
	}
	dir, next, err := s.partitionDirs(*req.Window)
	if err != nil {
		return false, "", err
	}
	ok, err := s.exists(ctx, joinPath(dir, SuccessFile), false)
	if err != nil || ok {
		return ok, dir, err
	}
	if s.cfg.Ready == ReadyNextPartition {
		ok, err := s.exists(ctx, next, true)
		return ok, dir, err
	}
	return false, dir, nil
}

// exists reports whether p exists as a directory (dir) or a regular file;
// on S3, whether objects exist under the prefix p or the object p does.
func (s *Source) exists(ctx context.Context, p string, dir bool) (bool, error) {
	if s.s3 != nil {
		ok, err := s.s3.exists(ctx, p, dir)
		if err != nil {
			return false, fmt.Errorf("check readiness: %w", err)
		}
		return ok, nil
	}
	return existsLocal(p, dir)
}

// existsLocal reports whether p exists as a directory (dir) or a regular
// file.
func existsLocal(p string, dir bool) (bool, error) {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("check readiness: %w", err)
	case dir:
		return st.IsDir(), nil
	}
	return st.Mode().IsRegular(), nil
}
