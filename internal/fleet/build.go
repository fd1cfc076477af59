package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The commands the fleet runs, as `go build` names them.
var commands = map[string]string{
	"amtops-server": "./server/cmd/amtops-server",
	"amtopsctl":     "./server/cmd/amtopsctl",
	"amtops-agent":  "./agent/cmd/amtops-agent",
	"amtsim":        "./internal/amtsim/cmd/amtsim",
}

// Build compiles the fleet's commands from the module that holds the
// working directory into dir, in one `go build`, and returns their paths
// by command name.
func Build(ctx context.Context, dir string) (map[string]string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fleet: build: %w", err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	out := map[string]string{}
	for name, pkg := range commands {
		args = append(args, pkg)
		out[name] = filepath.Join(dir, name)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("fleet: go build: %w: %s", err, b)
	}
	return out, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("fleet: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("fleet: not inside the amtops module (go env GOMOD is %q)", mod)
	}
	return filepath.Dir(mod), nil
}
