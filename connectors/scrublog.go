package connectors

import (
	"context"
	"log/slog"
)

// LogHandler returns a handler that passes records to h with their message
// and attribute values scrubbed (Scrub): a log never shows a value a
// `${NAME}` reference expanded to in this process.
func (r *Registry) LogHandler(h slog.Handler) slog.Handler {
	return &scrubHandler{h: h, r: r}
}

type scrubHandler struct {
	h slog.Handler
	r *Registry
}

func (s *scrubHandler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s *scrubHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, s.r.Scrub(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(s.attr(a))
		return true
	})
	return s.h.Handle(ctx, out)
}

func (s *scrubHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	scrubbed := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		scrubbed[i] = s.attr(a)
	}
	return &scrubHandler{h: s.h.WithAttrs(scrubbed), r: s.r}
}

func (s *scrubHandler) WithGroup(name string) slog.Handler {
	return &scrubHandler{h: s.h.WithGroup(name), r: s.r}
}

// attr scrubs the value of a: strings, errors and anything else printed
// as text.
func (s *scrubHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, s.r.Scrub(v.String()))
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i, e := range g {
			out[i] = s.attr(e)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.Any(a.Key, s.r.ScrubError(err))
		}
		if text := v.String(); s.r.Scrub(text) != text {
			return slog.String(a.Key, s.r.Scrub(text))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
