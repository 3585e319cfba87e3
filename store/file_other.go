//go:build !unix

package store

import (
	"errors"
	"fmt"
	"os"
)

// owned is a database file this process holds. Without flock(2) the file
// is only checked for deletion by path.
type owned struct {
	path string
	f    *os.File
	fi   os.FileInfo
}

// ErrInUse is returned when another process holds the database.
var ErrInUse = errors.New("another switchboard is using this database")

func own(path string) (*owned, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &owned{path: path, f: f, fi: fi}, nil
}

func (o *owned) size() (int64, error) {
	fi, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (o *owned) check() error {
	now, err := os.Stat(o.path)
	if err != nil {
		return fmt.Errorf("%s: the database file is gone: %w", o.path, err)
	}
	if !os.SameFile(now, o.fi) {
		return fmt.Errorf("%s: the database file was replaced by another file while in use", o.path)
	}
	return nil
}

func (o *owned) close() error { return o.f.Close() }
