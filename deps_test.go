package sluice_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/sluicehq/sluice"

// TestLayering enforces the import arrows of STYLE.md: what each package may
// import from the project, so the layering holds by test, not by hope.
func TestLayering(t *testing.T) {
	rules := []struct {
		pkg     string
		allowed []string // project packages it may depend on, directly or not
		stdOnly bool
	}{
		{pkg: "protocol", stdOnly: true},
		{pkg: "connectors", allowed: []string{"protocol"}},
		{pkg: "connectors/files", allowed: []string{"protocol", "connectors"}},
		{pkg: "connectors/postgres", allowed: []string{"protocol", "connectors"}},
		{pkg: "connectors/clickhouse", allowed: []string{"protocol", "connectors"}},
		{pkg: "connectors/conformance", allowed: []string{"protocol", "connectors"}},
		{pkg: "connectors/arrowconv", allowed: []string{"protocol", "connectors"}},
		{pkg: "connectors/pgcdc", allowed: []string{"protocol", "connectors", "connectors/postgres"}},
		{pkg: "connectors/cdcapply", allowed: []string{"protocol", "connectors"}},
		{pkg: "telemetry", allowed: []string{"protocol"}},
		{pkg: "pipeline", allowed: []string{"protocol", "connectors"}},
		{pkg: "coordinator", allowed: []string{"protocol", "connectors", "pipeline", "telemetry"}},
		{pkg: "worker", allowed: []string{"protocol", "connectors", "telemetry"}},
		{pkg: "devcluster", allowed: []string{"protocol", "connectors", "pipeline", "telemetry", "coordinator", "worker", "embednats"}},
		{pkg: "cdcstream", allowed: []string{"protocol", "connectors", "connectors/pgcdc", "connectors/cdcapply", "connectors/postgres", "pipeline", "worker", "telemetry"}},
		{pkg: "embednats"},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+r.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list ./%s: %v\n%s", r.pkg, err, out)
			}
			allowed := map[string]bool{module + "/" + r.pkg: true}
			for _, a := range r.allowed {
				allowed[module+"/"+a] = true
			}
			for _, dep := range strings.Fields(string(out)) {
				switch {
				case r.stdOnly:
					if dep != module+"/"+r.pkg {
						t.Errorf("%s must import only the standard library, but depends on %s", r.pkg, dep)
					}
				case strings.HasPrefix(dep, module+"/") && !allowed[dep]:
					t.Errorf("%s must not depend on %s (allowed: %v)", r.pkg, dep, r.allowed)
				}
			}
		})
	}
}
