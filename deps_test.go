package sluice_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/sluicehq/sluice"

// rule says what one package of the module may depend on, directly or not,
// apart from the standard library and third-party modules.
type rule struct {
	pkg     string   // relative to the module; "" is the module's root
	allowed []string // project packages it may depend on
	stdOnly bool     // no third-party module either
	// wiring marks the programs (cmd, benchmarks) and the tests against
	// real servers: they may depend on every package that is not test
	// support, and on test support too with usesTestSupport (benchmarks
	// and tests, which are not shipped).
	wiring, usesTestSupport bool
	// testSupport marks the packages only tests and benchmarks use.
	testSupport bool
}

// rules are the import arrows of STYLE.md, one for every package of the
// module: TestEveryPackageHasARule fails for a new package without one, so
// that it says where it sits before it is checked. A connector package
// directly under connectors/ without a rule of its own takes connectorRule,
// so adding a connector kind needs no line here.
var rules = []rule{
	{pkg: "", stdOnly: true}, // this test
	{pkg: "protocol", stdOnly: true},
	{pkg: "connectors", allowed: []string{"protocol"}},
	{pkg: "connectors/cdcapply", allowed: []string{"protocol", "connectors"}},
	// connectors/postgres, connectors/arrowconv and any new
	// connectors/<kind> take connectorRule.
	{pkg: "connectors/files", allowed: []string{"protocol", "connectors", "connectors/arrowconv", "objstore"}},
	{pkg: "connectors/clickhouse", allowed: []string{"protocol", "connectors", "connectors/arrowconv"}},
	{pkg: "connectors/pgcdc", allowed: []string{"protocol", "connectors", "connectors/postgres", "contract"}},
	{pkg: "connectors/iceberg", allowed: []string{"protocol", "connectors", "connectors/arrowconv"}},
	{pkg: "connectors/iceberg/s3test", testSupport: true},
	{pkg: "connectors/kafka", allowed: []string{"protocol", "connectors", "connectors/arrowconv"}},
	{pkg: "connectors/kafka/kafkatest", allowed: []string{"protocol", "connectors", "connectors/kafka", "connectors/arrowconv"}, testSupport: true},
	{pkg: "connectors/builtin", wiring: true},
	{pkg: "connectors/conformance", allowed: []string{"protocol", "connectors"}, testSupport: true},
	{pkg: "connectors/postgres/pgtest", testSupport: true},
	{pkg: "connectors/files/filestest", stdOnly: true, testSupport: true},
	{pkg: "connectors/clickhouse/chtest", testSupport: true},
	{pkg: "connectors/cdcapply/cdctest", testSupport: true, allowed: []string{"protocol", "connectors", "connectors/cdcapply",
		"connectors/files", "connectors/arrowconv", "connectors/postgres", "connectors/pgcdc", "contract", "embednats", "objstore"}},
	{pkg: "telemetry", allowed: []string{"protocol"}},
	{pkg: "contract", allowed: []string{"protocol", "connectors"}},
	{pkg: "pipeline", allowed: []string{"protocol", "connectors", "contract"}},
	{pkg: "coordinator", allowed: []string{"protocol", "connectors", "contract", "pipeline", "telemetry"}},
	{pkg: "worker", allowed: []string{"protocol", "connectors", "connectors/cdcapply", "contract", "telemetry"}},
	{pkg: "embednats"},
	{pkg: "console", stdOnly: true},
	{pkg: "objstore"},
	{pkg: "objstore/s3test", allowed: []string{"objstore"}, testSupport: true},
	{pkg: "devcluster", allowed: []string{"protocol", "connectors", "connectors/cdcapply", "contract", "pipeline", "telemetry", "coordinator", "worker", "embednats"}},
	{pkg: "cmd/sluice", wiring: true},
	{pkg: "bench/measure", stdOnly: true},
	{pkg: "bench/harness", allowed: []string{"bench/measure", "coordinator", "protocol", "connectors", "pipeline", "contract", "telemetry"}},
	{pkg: "bench/cdc", wiring: true, usesTestSupport: true},
	{pkg: "bench/clickhouse", wiring: true, usesTestSupport: true},
	{pkg: "bench/contract", wiring: true, usesTestSupport: true},
	{pkg: "bench/fullload", wiring: true, usesTestSupport: true},
	{pkg: "bench/replica", wiring: true, usesTestSupport: true},
	{pkg: "bench/incremental", wiring: true, usesTestSupport: true},
	{pkg: "bench/lake", wiring: true, usesTestSupport: true},
	{pkg: "bench/kafka", wiring: true, usesTestSupport: true},
	{pkg: "bench/compact", wiring: true},
	{pkg: "bench/replicate", wiring: true, usesTestSupport: true},
	{pkg: "integration", wiring: true, usesTestSupport: true},
}

// connectorRule is the rule of a connector package, connectors/<kind>,
// that has no rule of its own: it imports the contract, the wire types and
// object storage, never another connector or the cluster's packages.
var connectorRule = rule{allowed: []string{"protocol", "connectors", "objstore"}}

// effectiveRules returns rules plus connectorRule for each package of
// pkgs (import paths) directly under connectors/ that has none.
func effectiveRules(pkgs []string) []rule {
	out := slices.Clone(rules)
	have := map[string]bool{}
	for _, r := range rules {
		have[importPath(r.pkg)] = true
	}
	for _, p := range pkgs {
		rel, ok := strings.CutPrefix(p, module+"/connectors/")
		if !ok || have[p] || strings.Contains(rel, "/") {
			continue
		}
		r := connectorRule
		r.pkg = "connectors/" + rel
		out = append(out, r)
	}
	return out
}

// modulePackages lists the module's packages (import paths).
func modulePackages(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list ./...: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func importPath(pkg string) string {
	if pkg == "" {
		return module
	}
	return module + "/" + pkg
}

// TestEveryPackageHasARule: every package `go list ./...` finds has exactly
// one rule, and every rule a package.
func TestEveryPackageHasARule(t *testing.T) {
	pkgs := modulePackages(t)
	have := map[string]int{}
	for _, r := range effectiveRules(pkgs) {
		have[importPath(r.pkg)]++
	}
	listed := map[string]bool{}
	for _, p := range pkgs {
		listed[p] = true
		if have[p] != 1 {
			t.Errorf("package %s has %d rules in deps_test.go, want 1: say what it may import", p, have[p])
		}
	}
	for p := range have {
		if !listed[p] {
			t.Errorf("deps_test.go has a rule for %s, which go list does not find", p)
		}
	}
}

// TestLayering enforces the import arrows of STYLE.md: what each package may
// import from the project, so the layering holds by test, not by hope.
func TestLayering(t *testing.T) {
	all := effectiveRules(modulePackages(t))
	support := map[string]bool{}
	for _, r := range all {
		if r.testSupport {
			support[importPath(r.pkg)] = true
		}
	}
	for _, r := range all {
		t.Run(r.pkg, func(t *testing.T) {
			self := importPath(r.pkg)
			out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+r.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list ./%s: %v\n%s", r.pkg, err, out)
			}
			allowed := map[string]bool{self: true}
			for _, a := range r.allowed {
				allowed[importPath(a)] = true
			}
			for _, dep := range strings.Fields(string(out)) {
				project := dep == module || strings.HasPrefix(dep, module+"/")
				switch {
				case dep == self:
				case r.stdOnly:
					t.Errorf("%s must import only the standard library, but depends on %s", self, dep)
				case !project:
				case r.wiring && support[dep] && !r.usesTestSupport:
					t.Errorf("%s must not depend on %s: it is test support", self, dep)
				case r.wiring:
				case !allowed[dep]:
					t.Errorf("%s must not depend on %s (allowed: %v)", self, dep, r.allowed)
				}
			}
		})
	}
}

// kindExemptions are the places outside a connector's package that may
// spell some of its kinds (nil: any kind), by path (a directory covers all
// below it).
var kindExemptions = map[string][]string{
	// The demo's pipelines, which `sluice demo` prints for a new user to
	// read, its --files flag (a number of files, not the kind) and its
	// --sink flag.
	"cmd/sluice/demo.go": {"files", "iceberg"},
	// Benchmarks measure particular connectors, and bench/measure reads
	// the PostgreSQL server's processes by their name.
	"bench": nil,
	// Kafka's offset reset word latest (a source's or a trigger feed's
	// start), not the kind.
	"connectors/kafka/config.go": {"latest"},
}

// TestKindNames: a connector kind's name is known only to its package (which
// declares it as a constant named Kind or ending in Kind) and, through
// registration, to the registry. No other package's non-test Go file holds
// it as a string literal, or a spec naming it (kind: files, "kind":"files"):
// code elsewhere asks the registry for a capability instead of switching on
// a kind. kindExemptions lists the places that may.
func TestKindNames(t *testing.T) {
	type file struct {
		path, dir string
		ast       *ast.File
	}
	var files []file
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, file{path: filepath.ToSlash(path), dir: filepath.ToSlash(filepath.Dir(path)), ast: f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	owner := map[string]string{} // kind -> directory of its package
	for _, f := range files {
		if !strings.HasPrefix(f.dir, "connectors/") {
			continue
		}
		for _, decl := range f.ast.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasSuffix(name.Name, "Kind") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						kind, _ := strconv.Unquote(lit.Value)
						owner[kind] = f.dir
					}
				}
			}
		}
	}
	for _, want := range []string{"files", "postgres"} {
		if _, ok := owner[want]; !ok {
			t.Fatalf("no package declares the kind %q (found %v): the test does not find kinds", want, owner)
		}
	}
	specs := map[string]*regexp.Regexp{}
	for kind := range owner {
		q := regexp.QuoteMeta(kind)
		specs[kind] = regexp.MustCompile(`(?m)(\bkind:\s*["']?` + q + `["']?(\s|,|}|$))|("kind"\s*:\s*"` + q + `")`)
	}
	exempt := func(path, kind string) bool {
		for p, kinds := range kindExemptions {
			if (path == p || strings.HasPrefix(path, p+"/")) && (kinds == nil || slices.Contains(kinds, kind)) {
				return true
			}
		}
		return false
	}
	for _, f := range files {
		ast.Inspect(f.ast, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			for kind, dir := range owner {
				if f.dir == dir || strings.HasPrefix(f.dir, dir+"/") || exempt(f.path, kind) {
					continue
				}
				if s == kind || specs[kind].MatchString(s) {
					t.Errorf("%s: %q names the kind %q of %s: ask the registry for a capability (or use %s's constant to register it)",
						fset.Position(lit.Pos()), s, kind, dir, dir)
				}
			}
			return true
		})
	}
}
