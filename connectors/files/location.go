package files

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/objstore"
)

// fileScheme is the URL scheme of a local path written as a URL.
const fileScheme = "file://"

// localPath returns the local path p names: p itself, or the path of a
// file:// URL (file:///data/out, file://localhost/data/out).
func localPath(p string) (string, error) {
	if !strings.HasPrefix(p, fileScheme) {
		return p, nil
	}
	u, err := url.Parse(p)
	if err != nil || (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") {
		return "", fmt.Errorf("%q is not a file:// URL of an absolute path (file:///data/out)", p)
	}
	return u.Path, nil
}

// checkPath checks the path field of a configuration, and that an s3
// field goes with an s3:// path only. It does no I/O.
func checkPath(p string, s3 objstore.Config) error {
	if p == "" {
		return &connectors.FieldError{Field: "path", Msg: "is required"}
	}
	if objstore.IsURL(p) {
		if _, err := objstore.ParseURL(p); err != nil {
			return &connectors.FieldError{Field: "path", Msg: err.Error()}
		}
		if err := s3.Validate(); err != nil {
			return &connectors.FieldError{Field: "s3", Msg: err.Error()}
		}
		return nil
	}
	if s3 != (objstore.Config{}) {
		return &connectors.FieldError{Field: "s3", Msg: "is only for an s3:// path"}
	}
	if _, err := localPath(p); err != nil {
		return &connectors.FieldError{Field: "path", Msg: err.Error()}
	}
	return nil
}

// s3Root is a dataset, a source tree or a change log under a prefix of a
// bucket.
type s3Root struct {
	b *objstore.Bucket
	// prefix is the root's key, without a trailing '/'; empty for the
	// whole bucket.
	prefix string
}

// openS3Root opens the bucket of an s3:// path. It reads the AWS shared
// configuration files but reaches no server.
func openS3Root(p string, cfg objstore.Config) (*s3Root, error) {
	loc, err := objstore.ParseURL(p)
	if err != nil {
		return nil, &connectors.FieldError{Field: "path", Msg: err.Error()}
	}
	b, err := objstore.Open(context.Background(), cfg, loc.Bucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return &s3Root{b: b, prefix: loc.Key}, nil
}

// key returns the key of rel (slash-separated) under the root.
func (r *s3Root) key(rel string) string {
	rel = strings.Trim(rel, "/")
	switch {
	case r.prefix == "":
		return rel
	case rel == "":
		return r.prefix
	}
	return r.prefix + "/" + rel
}

// dir returns the key prefix of the directory rel under the root, ending
// in '/' (empty for the bucket's root).
func (r *s3Root) dir(rel string) string {
	if k := r.key(rel); k != "" {
		return k + "/"
	}
	return ""
}

// url returns the s3:// URL of rel under the root.
func (r *s3Root) url(rel string) string { return r.b.URL(r.key(rel)) }

// joinPath joins rel (slash-separated) to a local directory or an s3://
// URL.
func joinPath(root, rel string) string {
	if objstore.IsURL(root) {
		return strings.TrimSuffix(root, "/") + "/" + strings.Trim(rel, "/")
	}
	return filepath.Join(root, filepath.FromSlash(rel))
}
