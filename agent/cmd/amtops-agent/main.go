// Command amtops-agent is the per-subnet agent that pulls phase-2 jobs.
package main

import (
	"fmt"
	"os"
)

func main() {
	// The agent lands with the phase-2 issue; until then it only says so.
	fmt.Fprintln(os.Stderr, "usage: amtops-agent --config agent.yaml (not yet implemented)")
	os.Exit(2)
}
