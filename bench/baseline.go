package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"tasks-api/internal/testbed"
)

// -baseline REF: the service as it was at another commit, built and run
// beside the measured one in the same run, on a database of its own seeded
// the same way, so that the write scenarios can be compared on the same
// machine at the same time: what the change feed (and whatever else changed
// since REF) costs a write.

// startBaseline builds REF and starts it, seeded like the measured service.
// The source comes out of git with git archive, which only reads the
// repository.
func startBaseline(ctx context.Context, o options, w *workspace, secret []byte, progress io.Writer) (*setup, string, error) {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--verify", o.baseline+"^{commit}").Output()
	if err != nil {
		return nil, "", fmt.Errorf("-baseline %s: not a commit of this repository: %w", o.baseline, err)
	}
	rev := strings.TrimSpace(string(out))
	src := filepath.Join(w.dir, "baseline-src")
	fmt.Fprintf(progress, "building the baseline, %s (%s)\n", o.baseline, rev[:12])
	if err := extractCommit(ctx, rev, src); err != nil {
		return nil, "", err
	}
	binDir := filepath.Join(w.dir, "baseline-bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, "", err
	}
	bin, err := testbed.BuildServiceFrom(ctx, src, binDir)
	if err != nil {
		return nil, "", err
	}
	b := &setup{bin: bin, secret: secret, client: newClient(o.conns)}
	spec := serviceSpec{name: "baseline", bin: bin, secret: secret, dataDir: filepath.Join(w.dir, "baseline-data")}
	fmt.Fprintln(progress, "starting the baseline on a fresh embedded PostgreSQL of its own")
	if b.svc, err = startService(ctx, w, spec); err != nil {
		return nil, "", err
	}
	b.db = b.svc
	fmt.Fprintf(progress, "seeding the baseline: %d users × %d tasks through its API\n", seedUsers, seedTasksPerUser)
	start := time.Now()
	if b.users, err = seed(ctx, b.client, b.svc.base, secret, false); err != nil {
		b.stop()
		return nil, "", err
	}
	fmt.Fprintf(progress, "seeded in %s\n", time.Since(start).Round(100*time.Millisecond))
	return b, rev, nil
}

// extractCommit writes the files of commit rev into dir.
func extractCommit(ctx context.Context, rev, dir string) error {
	cmd := exec.CommandContext(ctx, "git", "archive", "--format=tar", rev)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(stdout)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = cmd.Wait()
			return fmt.Errorf("git archive %s: %w", rev, err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(path, dir+string(filepath.Separator)) {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(path, 0o755)
		case tar.TypeReg:
			err = writeFile(path, tr, os.FileMode(h.Mode)&0o777)
		}
		if err != nil {
			_ = cmd.Wait()
			return err
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %w\n%s", rev, err, stderr.String())
	}
	return nil
}

func writeFile(path string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
