package files

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// checkParams checks the run parameters a files source takes (see
// connectors.ParamFile): file or path, one file or directory under the
// source's path, given relative to it or as a full path or URL inside
// it; partition, one time partition of a source laid out by time, which
// gives the run the partition's window. Nothing may point outside the
// source's path.
func checkParams(raw json.RawMessage, params map[string]string) (*connectors.Window, error) {
	c, err := parseSourceConfig(raw)
	if err != nil {
		return nil, nil // the spec's own problem, reported where it is validated
	}
	file, hasFile := params[connectors.ParamFile]
	dir, hasPath := params[connectors.ParamPath]
	if hasFile && hasPath {
		return nil, &connectors.FieldError{Field: "params." + connectors.ParamPath, Msg: "give file or path, not both"}
	}
	for name, v := range map[string]string{connectors.ParamFile: file, connectors.ParamPath: dir} {
		if name == connectors.ParamFile && !hasFile || name == connectors.ParamPath && !hasPath {
			continue
		}
		if _, err := relativeParam(c.Path, v); err != nil {
			return nil, &connectors.FieldError{Field: "params." + name, Msg: err.Error()}
		}
	}
	p, ok := params[connectors.ParamPartition]
	if !ok {
		return nil, nil
	}
	if c.Layout == "" {
		return nil, &connectors.FieldError{Field: "params." + connectors.ParamPartition, Msg: "the source is not laid out by time partitions (layout)"}
	}
	l, err := parseLayout(c.Layout)
	if err != nil {
		return nil, nil
	}
	from, err := l.parse(strings.Trim(p, "/"))
	if err != nil {
		return nil, &connectors.FieldError{Field: "params." + connectors.ParamPartition, Msg: err.Error()}
	}
	return &connectors.Window{From: from, To: from.Add(l.size)}, nil
}

// relativeParam returns the slash-separated path, relative to root, that
// a run parameter names: a relative path, or a full path (or URL) inside
// root. It refuses anything outside root, and names starting with '.' or
// '_', which the source never reads.
func relativeParam(root, v string) (string, error) {
	rel := v
	if objstore.IsURL(root) || objstore.IsURL(v) {
		if objstore.IsURL(v) {
			r, ok := strings.CutPrefix(v, strings.TrimSuffix(root, "/")+"/")
			if !ok || !objstore.IsURL(root) {
				return "", fmt.Errorf("%q is not under the source's path %s", v, root)
			}
			rel = r
		}
	} else if lp, err := localPath(root); err == nil && (strings.HasPrefix(v, "/") || strings.HasPrefix(v, fileScheme)) {
		abs, err := localPath(v)
		if err != nil {
			return "", err
		}
		r, ok := strings.CutPrefix(path.Clean(abs), strings.TrimSuffix(path.Clean(lp), "/")+"/")
		if !ok {
			return "", fmt.Errorf("%q is not under the source's path %s", v, root)
		}
		rel = r
	}
	clean := path.Clean(rel)
	switch {
	case rel == "" || clean == ".":
		return "", fmt.Errorf("%q names no file or directory under the source's path", v)
	case strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../"):
		return "", fmt.Errorf("%q is outside the source's path %s", v, root)
	}
	for el := range strings.SplitSeq(clean, "/") {
		if strings.HasPrefix(el, ".") || strings.HasPrefix(el, "_") {
			return "", fmt.Errorf("%q has a name starting with '.' or '_', which the source never reads", v)
		}
	}
	return clean, nil
}

// parse returns the start of the partition whose relative path is s.
func (l layout) parse(s string) (time.Time, error) {
	t, err := time.Parse(strings.Join(l.parts, ""), s)
	if err != nil || l.render(t) != s {
		return time.Time{}, fmt.Errorf("%q is not a partition of the layout (example: %s)", s, l.render(time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)))
	}
	return t.UTC(), nil
}

// paramRoot returns what a run reads when its parameters name a file or
// a directory under the source's path (checked by checkParams), whatever
// its window; root otherwise.
func (s *Source) paramRoot(root string, params map[string]string) (string, error) {
	v, ok := params[connectors.ParamFile]
	if !ok {
		v, ok = params[connectors.ParamPath]
	}
	if !ok {
		return root, nil
	}
	rel, err := relativeParam(s.cfg.Path, v)
	if err != nil {
		return "", connectors.Permanent(fmt.Errorf("params: %w", err))
	}
	return joinPath(s.path(), rel), nil
}
