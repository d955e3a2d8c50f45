package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/coordinator"
)

// The deployment files are checked against the binary: every sluice
// command line is parsed by the real command tree (an unknown or
// misspelt flag, a missing required one fails), every NATS configuration
// by nats-server's own parser, and the names, ports and addresses that tie
// the parts together must agree. No cluster or Docker engine runs here.

// parseSluice parses a sluice command line (args without the binary) with
// the command tree of this build and returns the command it runs, its
// flags set.
func parseSluice(t *testing.T, where string, args []string) *cobra.Command {
	t.Helper()
	root := newRootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Fatalf("%s: %q is not a sluice command: %v", where, args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("%s: sluice %s: %v", where, strings.Join(args, " "), err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		t.Errorf("%s: sluice %s: %v", where, strings.Join(args, " "), err)
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		t.Errorf("%s: sluice %s: %v", where, strings.Join(args, " "), err)
	}
	return cmd
}

func flagValue(t *testing.T, cmd *cobra.Command, name string) string {
	t.Helper()
	f := cmd.Flags().Lookup(name)
	if f == nil {
		t.Fatalf("sluice %s has no flag --%s", cmd.Name(), name)
	}
	return f.Value.String()
}

// sluiceEnv lists the SLUICE_* variables the binary reads: those its
// source names.
func sluiceEnv(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`"(SLUICE_[A-Z0-9_]+)"`)
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
	}
	if !slices.Contains(out, "SLUICE_NATS") {
		t.Fatalf("found no SLUICE_NATS in the source: %v", out)
	}
	return out
}

// natsURLs splits a SLUICE_NATS value into host and port per server.
func natsURLs(t *testing.T, where, v string) [][2]string {
	t.Helper()
	var out [][2]string
	for _, u := range strings.Split(v, ",") {
		hp, ok := strings.CutPrefix(u, "nats://")
		host, port, err := net.SplitHostPort(hp)
		if !ok || err != nil {
			t.Fatalf("%s: SLUICE_NATS: %q is not nats://host:port", where, u)
		}
		out = append(out, [2]string{host, port})
	}
	return out
}

func hostPort(t *testing.T, where, v string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(v)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		t.Fatalf("%s: %q is not host:port", where, v)
	}
	return host, n
}

// Kubernetes objects, as much of them as the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec yaml.Node         `yaml:"spec"`
	file string
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// selects tells whether s selects a pod with labels.
func (s labelSelector) selects(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe  `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe  `yaml:"livenessProbe"`
	VolumeMounts   []k8sMount `yaml:"volumeMounts"`
}

type k8sMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Port any `yaml:"port"`
	} `yaml:"httpGet"`
}

// port returns the number of a container port named or numbered p.
func (c k8sContainer) port(p any) (int, bool) {
	for _, cp := range c.Ports {
		if cp.Name == fmt.Sprint(p) || strconv.Itoa(cp.ContainerPort) == fmt.Sprint(p) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

type k8sWorkload struct {
	ServiceName string        `yaml:"serviceName"`
	Replicas    int           `yaml:"replicas"`
	Selector    labelSelector `yaml:"selector"`
	Template    struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
			Containers                    []k8sContainer `yaml:"containers"`
			Volumes                       []struct {
				Name   string `yaml:"name"`
				Secret *struct {
					SecretName string `yaml:"secretName"`
				} `yaml:"secret"`
				ConfigMap *struct {
					Name string `yaml:"name"`
				} `yaml:"configMap"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
	VolumeClaimTemplates []struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
	} `yaml:"volumeClaimTemplates"`
	kind, name string
}

type k8sService struct {
	ClusterIP                string            `yaml:"clusterIP"`
	PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
	Selector                 map[string]string `yaml:"selector"`
	Ports                    []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort any    `yaml:"targetPort"`
	} `yaml:"ports"`
}

type k8sPolicy struct {
	PodSelector labelSelector `yaml:"podSelector"`
	Ingress     []struct {
		From  []k8sPeer       `yaml:"from"`
		Ports []k8sPolicyPort `yaml:"ports"`
	} `yaml:"ingress"`
}

type k8sPeer struct {
	PodSelector *labelSelector `yaml:"podSelector"`
}

type k8sPolicyPort struct {
	Port int `yaml:"port"`
}

type k8sPDB struct {
	MaxUnavailable any           `yaml:"maxUnavailable"`
	MinAvailable   any           `yaml:"minAvailable"`
	Selector       labelSelector `yaml:"selector"`
}

type k8sImage struct {
	Name string `yaml:"name"`
}

const k8sDir = "../../deploy/kubernetes"

func loadManifests(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	var out []k8sObject
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: an object without kind or name", f)
			}
			o.file = filepath.Base(f)
			out = append(out, o)
		}
	}
	return out
}

func decodeSpec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var v T
	if err := o.Spec.Decode(&v); err != nil {
		t.Fatalf("%s %s %s: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
	return v
}

// TestKubernetesManifests checks deploy/kubernetes: the sluice command
// lines against the binary's flags, nats.conf against nats-server's
// parser, and the names and ports between them: Raft addresses and peers
// on the coordinators' headless Service, SLUICE_NATS on the NATS pods,
// Services, probes, volumes, PodDisruptionBudgets, the workers' grace
// period against their drain, and the NetworkPolicies against the
// connections the cluster makes.
func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	var kust struct {
		Namespace string     `yaml:"namespace"`
		Resources []string   `yaml:"resources"`
		Images    []k8sImage `yaml:"images"`
	}
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil || yaml.Unmarshal(b, &kust) != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	var files []string
	for _, o := range objs {
		if !slices.Contains(files, o.file) {
			files = append(files, o.file)
		}
	}
	slices.Sort(files)
	if res := slices.Sorted(slices.Values(kust.Resources)); !slices.Equal(res, files) {
		t.Errorf("kustomization.yaml lists %v; the directory holds %v", res, files)
	}
	ns := kust.Namespace

	workloads := map[string]*k8sWorkload{}
	services := map[string]k8sService{}
	configMaps := map[string]map[string]string{}
	var policies []k8sPolicy
	var pdbs []k8sPDB
	for _, o := range objs {
		switch o.Kind {
		case "Namespace":
			if o.Metadata.Name != ns {
				t.Errorf("namespace %s; kustomization.yaml puts everything in %s", o.Metadata.Name, ns)
			}
		case "StatefulSet", "Deployment":
			w := decodeSpec[k8sWorkload](t, o)
			w.kind, w.name = o.Kind, o.Metadata.Name
			workloads[w.name] = &w
		case "Service":
			services[o.Metadata.Name] = decodeSpec[k8sService](t, o)
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o.Data
		case "NetworkPolicy":
			policies = append(policies, decodeSpec[k8sPolicy](t, o))
		case "PodDisruptionBudget":
			pdbs = append(pdbs, decodeSpec[k8sPDB](t, o))
		default:
			t.Errorf("%s: unexpected kind %s", o.file, o.Kind)
		}
	}
	nats, coord, worker := workloads["sluice-nats"], workloads["sluice-coordinator"], workloads["sluice-worker"]
	if nats == nil || coord == nil || worker == nil || nats.kind != "StatefulSet" || coord.kind != "StatefulSet" || worker.kind != "Deployment" {
		t.Fatalf("want the StatefulSets sluice-nats and sluice-coordinator and the Deployment sluice-worker; have %v", workloads)
	}
	if coord.Replicas != 3 || nats.Replicas != 3 {
		t.Errorf("replicas: %d coordinators, %d NATS servers; want 3 of each", coord.Replicas, nats.Replicas)
	}
	known := sluiceEnv(t)

	// Each workload: its selector matches its pods; volumes, probes and
	// $(VAR) references resolve; a PodDisruptionBudget covers it.
	for _, w := range workloads {
		labels := w.Template.Metadata.Labels
		if len(w.Selector.MatchLabels) == 0 || !w.Selector.selects(labels) {
			t.Errorf("%s: selector %v does not select its pods %v", w.name, w.Selector.MatchLabels, labels)
		}
		covered := func(p k8sPDB) bool {
			return p.Selector.selects(labels) && (p.MaxUnavailable != nil || p.MinAvailable != nil)
		}
		if !slices.ContainsFunc(pdbs, covered) {
			t.Errorf("%s: no PodDisruptionBudget", w.name)
		}
		if w.kind == "StatefulSet" {
			if s, ok := services[w.ServiceName]; !ok || s.ClusterIP != "None" || !s.PublishNotReadyAddresses {
				t.Errorf("%s: serviceName %q is not a headless Service publishing pods before they are ready", w.name, w.ServiceName)
			}
		}
		var volumes []string
		for _, v := range w.Template.Spec.Volumes {
			volumes = append(volumes, v.Name)
			if v.ConfigMap != nil && configMaps[v.ConfigMap.Name] == nil {
				t.Errorf("%s: volume %s: no ConfigMap %s", w.name, v.Name, v.ConfigMap.Name)
			}
			if v.Secret != nil && v.Secret.SecretName != "sluice-api-token" {
				// The one Secret the user creates (kustomization.yaml says how).
				t.Errorf("%s: volume %s: Secret %s is not the documented sluice-api-token", w.name, v.Name, v.Secret.SecretName)
			}
		}
		for _, c := range w.VolumeClaimTemplates {
			volumes = append(volumes, c.Metadata.Name)
		}
		for _, c := range w.Template.Spec.Containers {
			for _, m := range c.VolumeMounts {
				if !slices.Contains(volumes, m.Name) {
					t.Errorf("%s/%s: mount of an unknown volume %s", w.name, c.Name, m.Name)
				}
			}
			for _, p := range []*k8sProbe{c.ReadinessProbe, c.LivenessProbe} {
				if p != nil && p.HTTPGet != nil {
					if _, ok := c.port(p.HTTPGet.Port); !ok {
						t.Errorf("%s/%s: probe on port %v, which the container does not declare", w.name, c.Name, p.HTTPGet.Port)
					}
				}
			}
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "SLUICE_") && !slices.Contains(known, e.Name) {
					t.Errorf("%s/%s: env %s: sluice reads no such variable (it reads %v)", w.name, c.Name, e.Name, known)
				}
			}
		}
	}
	// Services select pods of one workload and target ports they declare.
	for name, s := range services {
		var target *k8sWorkload
		for _, w := range workloads {
			if (labelSelector{MatchLabels: s.Selector}).selects(w.Template.Metadata.Labels) {
				if target != nil {
					t.Errorf("service %s selects the pods of %s and %s", name, target.name, w.name)
				}
				target = w
			}
		}
		if target == nil || len(s.Selector) == 0 {
			t.Errorf("service %s selects no pods", name)
			continue
		}
		for _, p := range s.Ports {
			n, ok := target.Template.Spec.Containers[0].port(p.TargetPort)
			if !ok || n != p.Port {
				t.Errorf("service %s: port %d targets %v, which %s declares as %d (%v)", name, p.Port, p.TargetPort, target.name, n, ok)
			}
		}
	}

	// The container env a $(VAR) reference in args expands from, as a pod
	// of w (its first) would see it.
	expand := func(w *k8sWorkload, c k8sContainer) []string {
		env := map[string]string{}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
				env[e.Name] = e.Value
			case e.ValueFrom.FieldRef.FieldPath == "metadata.name":
				env[e.Name] = w.name + "-0"
				if w.kind == "Deployment" {
					env[e.Name] = w.name + "-5d8f7c9b6-x2x7q"
				}
			case e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
				env[e.Name] = ns
			default:
				t.Errorf("%s/%s: env %s from %s", w.name, c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		ref := regexp.MustCompile(`\$\(([A-Za-z0-9_]+)\)`)
		var out []string
		for _, a := range c.Args {
			out = append(out, ref.ReplaceAllStringFunc(a, func(m string) string {
				name := ref.FindStringSubmatch(m)[1]
				v, ok := env[name]
				if !ok {
					t.Errorf("%s/%s: args refer to $(%s), which the container's env does not define", w.name, c.Name, name)
				}
				return v
			}))
		}
		return out
	}
	envOf := func(c k8sContainer, name string) string {
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
		return ""
	}

	// NATS: nats.conf as nats-server reads it.
	nc := nats.Template.Spec.Containers[0]
	if !slices.Equal(nc.Args, []string{"--config", "/etc/nats/nats.conf"}) {
		t.Fatalf("sluice-nats args %v; want --config /etc/nats/nats.conf", nc.Args)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(configMaps["sluice-nats"]["nats.conf"]), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "sluice-nats-1")
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	clientPort, _ := nc.port("client")
	clusterPort, _ := nc.port("cluster")
	monitorPort, _ := nc.port("monitor")
	if opts.Port != clientPort || opts.Cluster.Port != clusterPort || opts.HTTPPort != monitorPort || !opts.JetStream || opts.ServerName != "sluice-nats-1" {
		t.Errorf("nats.conf: port %d, cluster %d, monitor %d, jetstream %v, server name %q; the container declares %d, %d, %d",
			opts.Port, opts.Cluster.Port, opts.HTTPPort, opts.JetStream, opts.ServerName, clientPort, clusterPort, monitorPort)
	}
	if !slices.ContainsFunc(nc.VolumeMounts, func(m k8sMount) bool { return m.Name == "data" && m.MountPath == opts.StoreDir }) {
		t.Errorf("nats.conf: JetStream stores in %s, not on the data volume", opts.StoreDir)
	}
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
	}
	var wantRoutes []string
	for i := range nats.Replicas {
		wantRoutes = append(wantRoutes, fmt.Sprintf("%s-%d.%s:%d", nats.name, i, nats.ServiceName, clusterPort))
	}
	if !slices.Equal(routes, wantRoutes) {
		t.Errorf("nats.conf routes %v; want every server of the StatefulSet %v", routes, wantRoutes)
	}
	checkNATS := func(who string, c k8sContainer) {
		urls := natsURLs(t, who, envOf(c, "SLUICE_NATS"))
		if len(urls) != nats.Replicas {
			t.Errorf("%s: SLUICE_NATS names %d servers; there are %d", who, len(urls), nats.Replicas)
		}
		for i, u := range urls {
			if want := fmt.Sprintf("%s-%d.%s", nats.name, i, nats.ServiceName); u[0] != want || u[1] != strconv.Itoa(clientPort) {
				t.Errorf("%s: SLUICE_NATS server %s:%s; want %s:%d", who, u[0], u[1], want, clientPort)
			}
		}
	}

	// Coordinators.
	cc := coord.Template.Spec.Containers[0]
	cmd := parseSluice(t, "sluice-coordinator", expand(coord, cc))
	if cmd.Name() != "coordinator" {
		t.Fatalf("sluice-coordinator runs sluice %s", cmd.Name())
	}
	raftPort, _ := cc.port("raft")
	httpPort, _ := cc.port("http")
	fqdn := func(i int) string {
		return fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local", coord.name, i, coord.ServiceName, ns)
	}
	if host, port := hostPort(t, "--raft-addr", flagValue(t, cmd, "raft-addr")); host != fqdn(0) || port != raftPort {
		t.Errorf("--raft-addr %s:%d; want the pod's stable name %s:%d", host, port, fqdn(0), raftPort)
	}
	if id := flagValue(t, cmd, "node-id"); id != coord.name+"-0" {
		t.Errorf("--node-id %q; want the pod name", id)
	}
	peers, err := parsePeers(flagValue(t, cmd, "raft-peers"))
	if err != nil || len(peers) != coord.Replicas {
		t.Fatalf("--raft-peers %v (%v); want the %d pods", peers, err, coord.Replicas)
	}
	for i, p := range peers {
		if want := fmt.Sprintf("%s-%d", coord.name, i); p.ID != want || p.Addr != fmt.Sprintf("%s:%d", fqdn(i), raftPort) {
			t.Errorf("--raft-peers: %s=%s; want %s=%s:%d", p.ID, p.Addr, want, fqdn(i), raftPort)
		}
	}
	if flagValue(t, cmd, "bootstrap") != "true" {
		t.Error("the coordinators do not bootstrap: a new cluster would never elect a leader")
	}
	if r := flagValue(t, cmd, "replicas"); r != strconv.Itoa(nats.Replicas) {
		t.Errorf("--replicas %s; the NATS cluster has %d servers", r, nats.Replicas)
	}
	if _, port := hostPort(t, "--http", flagValue(t, cmd, "http")); port != httpPort || services["sluice-api"].Ports[0].Port != httpPort {
		t.Errorf("--http port %d; the container declares %d, sluice-api serves %d", port, httpPort, services["sluice-api"].Ports[0].Port)
	}
	mountOf := func(c k8sContainer, path string) string {
		best := ""
		for _, m := range c.VolumeMounts {
			if (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) && len(m.MountPath) > len(best) {
				best = m.Name
			}
		}
		return best
	}
	if m := mountOf(cc, flagValue(t, cmd, "raft-dir")); m != coord.VolumeClaimTemplates[0].Metadata.Name {
		t.Errorf("--raft-dir %s is on volume %q, not on the pod's claim", flagValue(t, cmd, "raft-dir"), m)
	}
	if f := envOf(cc, "SLUICE_API_TOKEN_FILE"); mountOf(cc, f) != "api-token" || filepath.Base(f) != "token" {
		t.Errorf("SLUICE_API_TOKEN_FILE %q is not the key token of the sluice-api-token Secret's volume", f)
	}
	checkNATS("sluice-coordinator", cc)

	// Workers: the pod's grace period outlasts the drain.
	wc := worker.Template.Spec.Containers[0]
	wcmd := parseSluice(t, "sluice-worker", expand(worker, wc))
	if wcmd.Name() != "worker" {
		t.Fatalf("sluice-worker runs sluice %s", wcmd.Name())
	}
	drain, err := time.ParseDuration(flagValue(t, wcmd, "drain-timeout"))
	grace := 30 // Kubernetes' default
	if g := worker.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	if err != nil || time.Duration(grace)*time.Second < drain+10*time.Second {
		t.Errorf("sluice-worker: terminationGracePeriodSeconds %d; want at least --drain-timeout %s + 10s, or Kubernetes kills a draining worker", grace, drain)
	}
	checkNATS("sluice-worker", wc)

	// Network policies: the connections the cluster makes are allowed.
	allowed := func(from map[string]string, to *k8sWorkload, port int) bool {
		for _, p := range policies {
			if !p.PodSelector.selects(to.Template.Metadata.Labels) {
				continue
			}
			for _, in := range p.Ingress {
				okPort := len(in.Ports) == 0 || slices.ContainsFunc(in.Ports, func(x k8sPolicyPort) bool { return x.Port == port })
				okFrom := len(in.From) == 0 || slices.ContainsFunc(in.From, func(f k8sPeer) bool { return f.PodSelector != nil && f.PodSelector.selects(from) })
				if okPort && okFrom {
					return true
				}
			}
		}
		return false
	}
	outside := map[string]string{"app": "somebody-else"}
	for _, c := range []struct {
		from     map[string]string
		to       *k8sWorkload
		port     int
		want     bool
		fromName string
	}{
		{coord.Template.Metadata.Labels, coord, raftPort, true, "coordinator"},
		{coord.Template.Metadata.Labels, nats, clientPort, true, "coordinator"},
		{worker.Template.Metadata.Labels, nats, clientPort, true, "worker"},
		{nats.Template.Metadata.Labels, nats, clusterPort, true, "nats"},
		{outside, coord, httpPort, true, "a client"},
		{outside, coord, raftPort, false, "a client"},
		{worker.Template.Metadata.Labels, coord, raftPort, false, "worker"},
		{outside, nats, clientPort, false, "a client"},
		{outside, worker, 8080, false, "a client"},
	} {
		if got := allowed(c.from, c.to, c.port); got != c.want {
			t.Errorf("network policies: %s -> %s:%d allowed %v, want %v", c.fromName, c.to.name, c.port, got, c.want)
		}
	}
	for _, w := range workloads {
		for _, c := range w.Template.Spec.Containers {
			if c.Image == "sluice" && !slices.ContainsFunc(kust.Images, func(i k8sImage) bool { return i.Name == "sluice" }) {
				t.Errorf("%s: image sluice is not set in kustomization.yaml", w.name)
			}
		}
	}
}

// composeService is a service of docker-compose.yml.
type composeService struct {
	Image           string            `yaml:"image"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Ports           []string          `yaml:"ports"`
	Volumes         []string          `yaml:"volumes"`
	WorkingDir      string            `yaml:"working_dir"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
}

// TestComposeFile checks docker-compose.yml the same way: the sluice
// command lines against the binary's flags, the NATS servers' against
// nats-server's, and the names and ports between them.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]composeService `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	known := sluiceEnv(t)
	natsPorts := map[string]int{}
	var natsNames []string
	natsRoutes := map[string][]string{}
	natsCluster := map[string]int{}
	for name, s := range f.Services {
		for _, v := range s.Volumes {
			vol, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(vol, ".") && !strings.HasPrefix(vol, "/") {
				if _, ok := f.Volumes[vol]; !ok {
					t.Errorf("%s: volume %s is not declared", name, vol)
				}
			}
		}
		if !strings.HasPrefix(s.Image, "nats:") {
			continue
		}
		fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		opts, err := server.ConfigureOptions(fs, s.Command, func() {}, func() {}, func() {})
		if err != nil {
			t.Fatalf("%s: nats-server %v: %v", name, s.Command, err)
		}
		if !opts.JetStream || opts.ServerName != name {
			t.Errorf("%s: jetstream %v, server name %q; want JetStream and the service's name", name, opts.JetStream, opts.ServerName)
		}
		port := opts.Port
		if port == 0 {
			port = server.DEFAULT_PORT
		}
		natsPorts[name] = port
		natsNames = append(natsNames, name)
		natsRoutes[name], natsCluster[name] = routeHosts(opts), opts.Cluster.Port
	}
	if len(natsNames) != 3 {
		t.Fatalf("NATS services %v; want 3", natsNames)
	}
	for _, name := range natsNames {
		var want []string
		for _, n := range natsNames {
			want = append(want, fmt.Sprintf("%s:%d", n, natsCluster[n]))
		}
		slices.Sort(want)
		if got := slices.Sorted(slices.Values(natsRoutes[name])); !slices.Equal(got, want) {
			t.Errorf("%s: routes %v; want every NATS service's cluster port %v", name, got, want)
		}
	}

	type coordNode struct {
		service, id, addr string
		bootstrap         bool
	}
	var coords []coordNode
	var peerSets []string
	workers := 0
	for name, s := range f.Services {
		if s.Image != "sluice:dev" {
			continue
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "SLUICE_") && !slices.Contains(known, k) {
				t.Errorf("%s: environment %s: sluice reads no such variable (it reads %v)", name, k, known)
			}
		}
		for _, u := range natsURLs(t, name, s.Environment["SLUICE_NATS"]) {
			if p, ok := natsPorts[u[0]]; !ok || strconv.Itoa(p) != u[1] {
				t.Errorf("%s: SLUICE_NATS server %s:%s is not a NATS service's client port", name, u[0], u[1])
			}
		}
		cmd := parseSluice(t, name, s.Command)
		switch cmd.Name() {
		case "coordinator":
			addr := flagValue(t, cmd, "raft-addr")
			if host, _ := hostPort(t, name+" --raft-addr", addr); host != name {
				t.Errorf("%s: --raft-addr %s: other coordinators reach it as %s", name, addr, name)
			}
			coords = append(coords, coordNode{service: name, id: flagValue(t, cmd, "node-id"), addr: addr, bootstrap: flagValue(t, cmd, "bootstrap") == "true"})
			peerSets = append(peerSets, flagValue(t, cmd, "raft-peers"))
			if r := flagValue(t, cmd, "replicas"); r != strconv.Itoa(len(natsNames)) {
				t.Errorf("%s: --replicas %s; there are %d NATS servers", name, r, len(natsNames))
			}
			if slices.ContainsFunc(s.Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+s.WorkingDir) }) == (s.WorkingDir == "") {
				t.Errorf("%s: the Raft state under working_dir %q is not on a volume", name, s.WorkingDir)
			}
			if h := flagValue(t, cmd, "http"); h != "" {
				_, port := hostPort(t, name+" --http", h)
				if !slices.Contains(s.Ports, fmt.Sprintf("%d:%d", port, port)) {
					t.Errorf("%s: --http %s is not published (ports %v)", name, h, s.Ports)
				}
				if _, ok := s.Environment["SLUICE_API_TOKEN"]; !ok {
					t.Errorf("%s: --http %s without SLUICE_API_TOKEN: sluice refuses to start", name, h)
				}
			}
		case "worker":
			workers++
			drain, err := time.ParseDuration(flagValue(t, cmd, "drain-timeout"))
			grace, gerr := time.ParseDuration(s.StopGracePeriod)
			if err != nil || gerr != nil || grace < drain+10*time.Second {
				t.Errorf("%s: stop_grace_period %q; want at least --drain-timeout %s + 10s (compose's default is 10s)", name, s.StopGracePeriod, drain)
			}
		default:
			t.Errorf("%s runs sluice %s", name, cmd.Name())
		}
	}
	if len(coords) != 3 || workers == 0 {
		t.Fatalf("%d coordinators, %d worker services; want 3 and some", len(coords), workers)
	}
	for _, ps := range peerSets[1:] {
		if ps != peerSets[0] {
			t.Errorf("coordinators disagree on --raft-peers: %q and %q", peerSets[0], ps)
		}
	}
	peers, err := parsePeers(peerSets[0])
	if err != nil {
		t.Fatal(err)
	}
	bootstraps := 0
	for _, c := range coords {
		if c.bootstrap {
			bootstraps++
		}
		if !slices.ContainsFunc(peers, func(p coordinator.Peer) bool { return p.ID == c.id && p.Addr == c.addr }) {
			t.Errorf("%s: node %s at %s is not in --raft-peers %v", c.service, c.id, c.addr, peers)
		}
	}
	if bootstraps != 1 || len(peers) != len(coords) {
		t.Errorf("%d coordinators bootstrap, %d peers for %d coordinators; want one and one each", bootstraps, len(peers), len(coords))
	}
}

// routeHosts lists the host:port of each route of opts.
func routeHosts(opts *server.Options) []string {
	var out []string
	for _, r := range opts.Routes {
		out = append(out, r.Host)
	}
	return out
}
