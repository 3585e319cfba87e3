package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWrite: the file is replaced with its new mode; through a link, the
// file it names is, and the link stays; a write that fails leaves the
// file as it was and nothing beside it.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "checkout", "a.rules")
	os.Mkdir(filepath.Dir(real), 0o755)
	os.WriteFile(real, []byte("old"), 0o600)
	link := filepath.Join(dir, "a.rules")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := Write(link, []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link is gone: %v %v", fi, err)
	}
	if data, _ := os.ReadFile(real); string(data) != "new" {
		t.Fatalf("the linked file holds %q", data)
	}
	if fi, _ := os.Stat(real); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if os.Getuid() == 0 {
		return // root writes in a read-only directory
	}
	os.Chmod(filepath.Dir(real), 0o555)
	defer os.Chmod(filepath.Dir(real), 0o755)
	if err := Write(real, []byte("newer"), 0o640); err == nil {
		t.Fatal("a write in a read-only directory succeeded")
	}
	if data, _ := os.ReadFile(real); string(data) != "new" {
		t.Fatalf("a failed write changed the file: %q", data)
	}
	if left, _ := os.ReadDir(filepath.Dir(real)); len(left) != 1 {
		t.Fatalf("left behind: %v", left)
	}
}
