package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Scheme is the URL scheme of an S3 location.
const Scheme = "s3://"

// Config says how to reach S3 or an S3-compatible store. Every field is
// optional: empty ones take the standard AWS environment's values, and
// credentials only ever come from there (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, the shared config
// and credentials files, web identity, instance roles).
type Config struct {
	// Endpoint overrides AWS's endpoint, for an S3-compatible store
	// (http://127.0.0.1:7070); default $AWS_ENDPOINT_URL_S3, then
	// $AWS_ENDPOINT_URL, then the shared config's endpoint_url.
	Endpoint string `json:"endpoint,omitempty"`
	// Region; default $AWS_REGION, then $AWS_DEFAULT_REGION, then the
	// shared config, then us-east-1 when an endpoint is set.
	Region string `json:"region,omitempty"`
	// PathStyle addresses buckets in the path (http://host/bucket/key)
	// rather than in the host name; default true when an endpoint is set
	// (S3-compatible stores seldom serve bucket host names), false on AWS.
	PathStyle *bool `json:"path_style,omitempty"`
}

// Validate checks the configuration without I/O.
func (c Config) Validate() error {
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("endpoint: want http(s)://host[:port], not %q", c.Endpoint)
		}
	}
	return nil
}

// Location is an object or a prefix in a bucket.
type Location struct {
	Bucket string
	// Key is the object key or prefix, without a leading '/'; empty for
	// the whole bucket.
	Key string
}

// IsURL reports whether s is an s3:// URL.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// ParseURL parses s3://bucket/key. The key may be empty; a trailing '/' is
// dropped, and so are empty and "." segments. ".." is refused.
func ParseURL(s string) (Location, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return Location{}, fmt.Errorf("%q is not an s3:// URL", s)
	}
	bucket, key, _ := strings.Cut(rest, "/")
	if !validBucket(bucket) {
		return Location{}, fmt.Errorf("%q: bad bucket name %q", s, bucket)
	}
	var segs []string
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "", ".":
		case "..":
			return Location{}, fmt.Errorf("%q: \"..\" is not allowed in a key", s)
		default:
			segs = append(segs, seg)
		}
	}
	return Location{Bucket: bucket, Key: strings.Join(segs, "/")}, nil
}

// validBucket checks the rules every S3-compatible store shares: 3 to 63
// lower-case letters, digits, '.' and '-'.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// String returns the location as an s3:// URL.
func (l Location) String() string {
	if l.Key == "" {
		return Scheme + l.Bucket
	}
	return Scheme + l.Bucket + "/" + l.Key
}

// Join returns the location of rel (slash-separated) under l.
func (l Location) Join(rel string) Location {
	rel = strings.Trim(rel, "/")
	switch {
	case rel == "":
		return l
	case l.Key == "":
		return Location{Bucket: l.Bucket, Key: rel}
	}
	return Location{Bucket: l.Bucket, Key: l.Key + "/" + rel}
}

// Open returns a client for bucket, set up from cfg and the standard AWS
// environment and shared configuration. It reads the shared configuration
// files but does not reach the store: credentials are resolved, and a
// missing bucket found, by the first request.
func Open(ctx context.Context, cfg Config, bucket string) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !validBucket(bucket) {
		return nil, fmt.Errorf("bad bucket name %q", bucket)
	}
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	acfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	// The transport the SDK configured (a custom CA bundle included), in
	// a client of the bucket's own, so that Close can release its
	// connections. Redirects are not followed: the SDK reports them.
	var tr *http.Transport
	bc, ok := acfg.HTTPClient.(*awshttp.BuildableClient)
	if acfg.HTTPClient == nil {
		bc, ok = awshttp.NewBuildableClient(), true
	}
	if ok {
		tr = bc.GetTransport()
		acfg.HTTPClient = &http.Client{Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	client := s3.NewFromConfig(acfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		custom := o.BaseEndpoint != nil
		if o.Region == "" && custom {
			o.Region = "us-east-1"
		}
		o.UsePathStyle = custom
		if cfg.PathStyle != nil {
			o.UsePathStyle = *cfg.PathStyle
		}
		// Checksums only where the API requires them (DeleteObjects):
		// the SigV4 payload hash already covers every body, and the
		// trailing checksums that newer SDKs add by default are not
		// implemented by every S3-compatible store.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	if client.Options().Region == "" {
		return nil, errors.New("no AWS region: set AWS_REGION (or the region in the shared config, or s3.region)")
	}
	b := newBucket(client, bucket)
	b.transport = tr
	return b, nil
}
