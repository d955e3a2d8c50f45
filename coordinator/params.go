package coordinator

import (
	"maps"
	"strings"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// runParams reads the parameters of a run request that the leader and the
// pipeline's source take: window (an incremental run's window, "<from>,<to>"
// in RFC 3339) and those the source checks (connectors.ParamsFunc), which
// may name a window too (a time partition). A parameter the source
// refuses, or a window given twice, refuses the run.
func (t *leaderTerm) runParams(p *pipelineState, req protocol.RunRequest) (protocol.RunRequest, error) {
	if len(req.Params) == 0 || p.Spec.Streamed() {
		return req, nil
	}
	params := maps.Clone(req.Params)
	if v, ok := params[connectors.ParamWindow]; ok {
		from, to, found := strings.Cut(v, ",")
		f, err1 := time.Parse(time.RFC3339Nano, strings.TrimSpace(from))
		tt, err2 := time.Parse(time.RFC3339Nano, strings.TrimSpace(to))
		if !found || err1 != nil || err2 != nil {
			return req, invalid("params.window: %q is not <from>,<to> in RFC 3339", v)
		}
		w := protocol.Window{From: f.UTC(), To: tt.UTC()}
		if req.Window != nil && *req.Window != w {
			return req, invalid("params.window: %s differs from the request's window %s", w, req.Window)
		}
		req.Window = &w
	}
	w, err := t.c.reg.CheckParams(p.Spec.Source.Kind, p.Spec.Source.Config, params)
	if err != nil {
		return req, invalid("%v", err)
	}
	if w != nil {
		if req.Window != nil && *req.Window != *w {
			return req, invalid("params: the partition's window %s differs from the window %s", w, req.Window)
		}
		req.Window = w
	}
	return req, nil
}
