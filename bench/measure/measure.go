// Package measure holds what the benchmarks measure about the machine
// beside their timings: the CPU time of this process and of the PostgreSQL
// server, the load average, and how figures are printed.
package measure

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux
// everywhere in practice).
const clockTicks = 100

// LoadAverage is the first three fields of /proc/loadavg, or "".
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Best returns the index of the smallest of secs, the best repetition of a
// measurement (0 when secs is empty).
func Best(secs []float64) int {
	i := 0
	for j, s := range secs {
		if s < secs[i] {
			i = j
		}
	}
	return i
}

// Round rounds f to digits decimal places.
func Round(f float64, digits int) float64 {
	p, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', digits, 64), 64)
	return p
}

// SelfCPU is this process's user and system CPU time in seconds.
func SelfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// ServerCPU is the CPU time, in seconds, of every PostgreSQL server process
// on this machine: the live ones, plus what the postmaster's exited children
// (backends, parallel workers) used. It is 0 when /proc cannot tell.
func ServerCPU() float64 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	type proc struct {
		ppid           int
		self, children float64
	}
	procs := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15) cutime(16) cstime(17)
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open || string(b[open+1:close]) != "postgres" {
			continue
		}
		f := strings.Fields(string(b[close+2:]))
		if len(f) < 15 {
			continue
		}
		num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v / clockTicks }
		ppid, _ := strconv.Atoi(f[1])
		procs[pid] = proc{ppid: ppid, self: num(11) + num(12), children: num(13) + num(14)}
	}
	total := 0.0
	for _, p := range procs {
		total += p.self
		if _, child := procs[p.ppid]; !child {
			total += p.children // the postmaster: its exited children
		}
	}
	return total
}

// Thousands formats f rounded, with a comma every three digits.
func Thousands(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
