package clickhouse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// Client speaks ClickHouse's HTTP interface: a query in the body (or, for
// an INSERT, in the URL with the rows streamed as the body), settings as
// URL parameters, the result in the response body. It holds no state but
// an http.Client's pooled connections; it is safe for concurrent use.
type Client struct {
	base     url.URL // scheme and host only
	user     string
	password string
	settings url.Values
	hc       *http.Client
}

// NewClient returns a client of the server at addr, an http:// or https://
// URL whose user and password, if any, authenticate every request
// (X-ClickHouse-User and X-ClickHouse-Key headers, never the URL). settings
// are sent with every request.
func NewClient(addr string, settings map[string]string) (*Client, error) {
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("clickhouse address %s: want http://host:port", redactURL(addr))
	}
	c := &Client{base: url.URL{Scheme: u.Scheme, Host: u.Host}, settings: url.Values{}}
	if u.User != nil {
		c.user = u.User.Username()
		c.password, _ = u.User.Password()
	}
	for k, v := range settings {
		c.settings.Set(k, v)
	}
	c.hc = &http.Client{Transport: &http.Transport{
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// The server closes a keep-alive connection after
		// keep_alive_timeout (3 s by default): give idle ones up before.
		IdleConnTimeout:     2 * time.Second,
		MaxIdleConnsPerHost: 16,
		// Rows go as they are written; the server answers at the end.
		DisableCompression: true,
	}}
	return c, nil
}

// Close releases the pooled connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Error is an exception the server reported.
type Error struct {
	// Code is ClickHouse's error code (60 unknown table, 57 table exists,
	// 27 cannot parse input, ...); 0 when the response had none.
	Code int
	// Message is the exception's text.
	Message string
	// Status is the HTTP status of the response.
	Status int
}

func (e *Error) Error() string {
	if e.Code == 0 {
		return fmt.Sprintf("clickhouse: HTTP %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("clickhouse: code %d: %s", e.Code, e.Message)
}

// Error codes the connector reacts to.
const (
	codeUnknownTable   = 60
	codeTableExists    = 57
	codeCannotParse    = 27
	codeUnknownSetting = 115
	codeColumnExists   = 44
)

// IsCode reports whether err is a server exception with one of the codes.
func IsCode(err error, codes ...int) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	for _, c := range codes {
		if e.Code == c {
			return true
		}
	}
	return false
}

var codeRE = regexp.MustCompile(`^Code: (\d+)[.,] ?(?:e\.displayText\(\) = )?(.*)`)

// parseError makes an Error from a response: the code from the
// X-ClickHouse-Exception-Code header (servers from 19.x on) or the body's
// "Code: N, e.displayText() = ..." (18.x) or "Code: N. DB::Exception: ..."
// (later) form.
func parseError(status int, header http.Header, body []byte) *Error {
	e := &Error{Status: status}
	msg := strings.TrimSpace(string(body))
	if m := codeRE.FindStringSubmatch(msg); m != nil {
		e.Code, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if h := header.Get("X-ClickHouse-Exception-Code"); h != "" {
		e.Code, _ = strconv.Atoi(h)
	}
	msg = strings.TrimSuffix(msg, ", e.what() = DB::Exception")
	if len(msg) > 2000 {
		msg = msg[:2000] + "..."
	}
	e.Message = msg
	return e
}

func (c *Client) request(ctx context.Context, query string, body io.Reader, settings map[string]string) (*http.Request, error) {
	u := c.base
	params := url.Values{}
	for k, v := range c.settings {
		params[k] = v
	}
	for k, v := range settings {
		params.Set(k, v)
	}
	if body == nil {
		body = strings.NewReader(query)
	} else {
		params.Set("query", query)
	}
	u.Path = "/"
	u.RawQuery = params.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/plain; charset=UTF-8")
	if c.user != "" {
		req.Header.Set("X-ClickHouse-User", c.user)
		req.Header.Set("X-ClickHouse-Key", c.password)
	}
	return req, nil
}

func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx := req.Context(); ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("clickhouse at %s: %w", c.base.Host, errors.Unwrap(err))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, parseError(resp.StatusCode, resp.Header, b)
	}
	return resp, nil
}

// Exec runs a statement that returns nothing (DDL, ALTER, INSERT ...
// VALUES, INSERT ... SELECT). ctx bounds the whole statement.
func (c *Client) Exec(ctx context.Context, query string) error {
	_, err := c.Query(ctx, query)
	return err
}

// Query runs a query and returns its whole result (for small results:
// it is read into memory). wait_end_of_query makes the server buffer the
// result, so that an exception during the query is an HTTP error, never a
// half result.
func (c *Client) Query(ctx context.Context, query string) ([]byte, error) {
	req, err := c.request(ctx, query, nil, map[string]string{"wait_end_of_query": "1"})
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("clickhouse at %s: read result: %w", c.base.Host, err)
	}
	return b, nil
}

// Rows runs a query and returns its rows in TabSeparated format, each
// field unescaped; "\N" (NULL) is returned as a nil field. The query must
// not name a FORMAT.
func (c *Client) Rows(ctx context.Context, query string) ([][][]byte, error) {
	rows, err := c.rawRows(ctx, query)
	for _, row := range rows {
		for i, f := range row {
			row[i] = unescapeTSV(f)
		}
	}
	return rows, err
}

// rawRows runs a query and returns its rows in TabSeparated format, each
// field as the server wrote it: escaped, as an INSERT ... FORMAT
// TabSeparated reads it back. The query must not name a FORMAT.
func (c *Client) rawRows(ctx context.Context, query string) ([][][]byte, error) {
	b, err := c.Query(ctx, query+" FORMAT TabSeparated")
	if err != nil {
		return nil, err
	}
	var rows [][][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b)
		}
		line := b[:i]
		b = b[min(i+1, len(b)):]
		rows = append(rows, bytes.Split(line, []byte{'\t'}))
	}
	return rows, nil
}

// Strings runs a query and returns the first field of each row.
func (c *Client) Strings(ctx context.Context, query string) ([]string, error) {
	rows, err := c.Rows(ctx, query)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = string(r[0])
	}
	return out, nil
}

// Int runs a query returning one integer.
func (c *Client) Int(ctx context.Context, query string) (int64, error) {
	b, err := c.Query(ctx, query+" FORMAT TabSeparated")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("clickhouse: %q is not an integer", b)
	}
	return n, nil
}

// Insert runs an INSERT ... FORMAT statement with body as its data,
// streamed as it is read, and returns once the server has inserted it
// all. ctx bounds the whole insert: cancelling it closes the connection,
// which makes the server fail the insert (blocks already written stay:
// write into a table of your own).
func (c *Client) Insert(ctx context.Context, query string, body io.Reader, settings map[string]string) error {
	req, err := c.request(ctx, query, body, settings)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// ServerVersion is a server version: major, minor, patch.
type ServerVersion [3]int

// AtLeast reports whether v is major.minor or later.
func (v ServerVersion) AtLeast(major, minor int) bool {
	return v[0] > major || v[0] == major && v[1] >= minor
}

func (v ServerVersion) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// ServerVersion asks the server for its version.
func (c *Client) ServerVersion(ctx context.Context) (ServerVersion, error) {
	b, err := c.Query(ctx, "SELECT version()")
	if err != nil {
		return ServerVersion{}, err
	}
	return parseVersion(strings.TrimSpace(string(b)))
}

func parseVersion(s string) (ServerVersion, error) {
	var v ServerVersion
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return v, fmt.Errorf("clickhouse: version %q is not major.minor.patch", s)
	}
	for i := 0; i < 3 && i < len(parts); i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return v, fmt.Errorf("clickhouse: version %q is not major.minor.patch", s)
		}
		v[i] = n
	}
	return v, nil
}

// unescapeTSV undoes TabSeparated escaping; "\N" becomes nil.
func unescapeTSV(f []byte) []byte {
	if len(f) == 2 && f[0] == '\\' && f[1] == 'N' {
		return nil
	}
	if bytes.IndexByte(f, '\\') < 0 {
		return append([]byte{}, f...)
	}
	out := make([]byte, 0, len(f))
	for i := 0; i < len(f); i++ {
		ch := f[i]
		if ch != '\\' || i+1 == len(f) {
			out = append(out, ch)
			continue
		}
		i++
		switch f[i] {
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case 'r':
			out = append(out, '\r')
		case '0':
			out = append(out, 0)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'a':
			out = append(out, '\a')
		case 'v':
			out = append(out, '\v')
		default:
			out = append(out, f[i])
		}
	}
	return out
}

// quoteIdent quotes a name for ClickHouse: `name`, with backquotes and
// backslashes escaped.
func quoteIdent(s string) string {
	return "`" + strings.NewReplacer(`\`, `\\`, "`", "\\`").Replace(s) + "`"
}

// quoteString quotes a string literal: 'text', with quotes and
// backslashes escaped.
func quoteString(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	b.Write(appendQuoted(nil, []byte(s)))
	b.WriteByte('\'')
	return b.String()
}

// appendQuoted appends s escaped for the inside of a single-quoted
// ClickHouse literal.
func appendQuoted(dst, s []byte) []byte {
	for _, ch := range s {
		switch ch {
		case '\'', '\\':
			dst = append(dst, '\\', ch)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\r':
			dst = append(dst, '\\', 'r')
		case 0:
			dst = append(dst, '\\', '0')
		default:
			dst = append(dst, ch)
		}
	}
	return dst
}

// redactURL returns addr with its password replaced by "xxxxx".
func redactURL(addr string) string {
	u, err := url.Parse(addr)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// TextChecksum computes the connectors.Checksum of the rows a query
// returns, each rendered as the CSV record PostgreSQL's COPY would write
// for text values: NULL an empty field, the empty string "", a value with
// a comma, quote or line break quoted with quotes doubled. It equals the
// sink's task checksums (summed over the CSV records it received) for a
// table of Nullable(String) columns loaded without a schema; for typed
// columns it sums ClickHouse's text forms, which differ from
// PostgreSQL's.
func TextChecksum(ctx context.Context, c *Client, query string) (connectors.Checksum, error) {
	var sum connectors.Checksum
	rows, err := c.Rows(ctx, query)
	if err != nil {
		return sum, fmt.Errorf("checksum: %w", err)
	}
	var rec []byte
	for _, r := range rows {
		rec = rec[:0]
		for i, f := range r {
			if i > 0 {
				rec = append(rec, ',')
			}
			switch {
			case f == nil:
			case len(f) == 0 || bytes.ContainsAny(f, ",\"\n\r") || string(f) == `\.`:
				rec = append(rec, '"')
				rec = append(rec, bytes.ReplaceAll(f, []byte{'"'}, []byte{'"', '"'})...)
				rec = append(rec, '"')
			default:
				rec = append(rec, f...)
			}
		}
		sum.Add(rec)
	}
	return sum, nil
}
