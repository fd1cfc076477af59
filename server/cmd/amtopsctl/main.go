// Command amtopsctl is the administrators' command line for amtops.
package main

import (
	"fmt"
	"os"
)

func main() {
	// The admin CLI lands with the day-2 issue; until then it only says so.
	fmt.Fprintln(os.Stderr, "usage: amtopsctl devices|collections|provision|update|remove|rename|sweep|jobs (not yet implemented)")
	os.Exit(2)
}
