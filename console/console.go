// Package console holds the web console's static assets: one HTML page, its
// script and its style sheet, embedded in the binary. The page reads the
// cluster through the HTTP API's JSON endpoints (with the API's bearer
// token, which it asks for when the API answers 401) and polls them; it
// holds no state of its own besides the token, kept in the browser tab's
// session storage.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves the assets under prefix (e.g. "/console/"): index.html at
// the prefix itself. Every answer carries a content security policy that
// allows only this origin's scripts, styles and API calls.
func Handler(prefix string) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
