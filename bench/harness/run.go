package harness

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/sluicehq/sluice/bench/measure"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/protocol"
)

// TimeRun starts a run of pipeline through client and waits for its
// commit, polling every 20 ms: its wall time, what this process and the
// PostgreSQL server used meanwhile, its phases and its status. A run that
// does not commit is an error.
func TimeRun(ctx context.Context, client *coordinator.Client, pipeline string) (float64, measure.Use, protocol.RunStatus, error) {
	runtime.GC()
	cpu0, srv0 := measure.SelfCPU(), measure.ServerCPU()
	start := time.Now()
	res, err := client.Run(ctx, protocol.RunRequest{Pipeline: pipeline})
	if err != nil {
		return 0, measure.Use{}, protocol.RunStatus{}, fmt.Errorf("run %s: %w", pipeline, err)
	}
	planned := time.Since(start).Seconds()
	tasksDone := 0.0
	st, err := client.WaitRun(ctx, res.RunID, 20*time.Millisecond, func(st protocol.RunStatus) {
		if tasksDone == 0 && st.Tasks > 0 && st.TasksDone == st.Tasks {
			tasksDone = time.Since(start).Seconds()
		}
	})
	secs := time.Since(start).Seconds()
	if tasksDone == 0 {
		tasksDone = secs
	}
	use := measure.Use{Client: measure.SelfCPU() - cpu0, Server: measure.ServerCPU() - srv0,
		Phases: &measure.Phases{Plan: measure.Round(planned, 3), Tasks: measure.Round(tasksDone-planned, 3), Commit: measure.Round(secs-tasksDone, 3)}}
	if err != nil {
		return 0, measure.Use{}, st, err
	}
	if st.State != protocol.RunCommitted {
		return 0, measure.Use{}, st, fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Error)
	}
	return secs, use, st, nil
}
