package noiseconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/flynn/noise"
)

// maxPlain is the largest plaintext that fits in one frame.
const maxPlain = MaxFrame - MinFrame

// ReadFrame reads one frame from r and returns its body (the ciphertext), reusing buf
// if it is large enough. It returns io.EOF if r ends before the frame starts, an error
// wrapping io.ErrUnexpectedEOF if it ends inside one, and errors wrapping
// ErrFrameTooLarge or ErrFrameTooSmall for lengths outside [MinFrame, MaxFrame], in
// which case it has read only the length.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	n, err := readFrameLen(r)
	if err != nil {
		return nil, err
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if err := readFrameBody(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// readFrameLen reads a frame's length, as ReadFrame does.
func readFrameLen(r io.Reader) (int, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("reading frame length: %w", err)
		}
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n > MaxFrame:
		return 0, fmt.Errorf("frame of %d bytes, limit %d: %w", n, MaxFrame, ErrFrameTooLarge)
	case n < MinFrame:
		return 0, fmt.Errorf("frame of %d bytes, minimum %d: %w", n, MinFrame, ErrFrameTooSmall)
	}
	return int(n), nil
}

// readFrameBody reads a frame's body into buf, as ReadFrame does.
func readFrameBody(r io.Reader, buf []byte) error {
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading frame of %d bytes: %w", len(buf), err)
	}
	return nil
}

// ReadMsgFrom reads one message (4-byte big-endian length, then the bytes) from a
// decrypted stream. It returns io.EOF if r ends before the message starts, an error
// wrapping io.ErrUnexpectedEOF if it ends inside one, and one wrapping
// ErrMessageTooLarge, having read only the length, if the length is over limit. It
// allocates as the bytes arrive, not as the length announces.
func ReadMsgFrom(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("reading message length: %w", err)
		}
		return nil, err
	}
	n := uint64(binary.BigEndian.Uint32(hdr[:]))
	if limit < 0 || n > uint64(limit) {
		return nil, fmt.Errorf("message of %d bytes, limit %d: %w", n, limit, ErrMessageTooLarge)
	}
	buf := make([]byte, min(int(n), 64<<10))
	read := 0
	for {
		m, err := io.ReadFull(r, buf[read:])
		read += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("reading message of %d bytes (got %d): %w", n, read, err)
		}
		if read == int(n) {
			return buf, nil
		}
		buf = append(buf, make([]byte, min(int(n)-read, len(buf)))...)
	}
}

// appendFrames encrypts the plaintext stream parts with cs as frames of at most
// MaxFrame bytes and appends them to out. An empty stream gives no frame.
func appendFrames(out []byte, cs *noise.CipherState, parts ...[]byte) ([]byte, error) {
	var err error
	for err == nil && len(parts) > 0 {
		out, err = sealFrame(out, cs, &parts)
	}
	return out, err
}

// sealFrame appends to out one frame holding the next maxPlain bytes of the
// plaintext stream *parts (or all of it, if less), and advances *parts past them.
// It encrypts in place: the plaintext is copied to where its ciphertext goes.
func sealFrame(out []byte, cs *noise.CipherState, parts *[][]byte) ([]byte, error) {
	for len(*parts) > 0 && len((*parts)[0]) == 0 {
		*parts = (*parts)[1:]
	}
	if len(*parts) == 0 {
		return out, nil
	}
	start := len(out) + 4
	out = append(out, 0, 0, 0, 0)
	for len(*parts) > 0 && len(out)-start < maxPlain {
		p := (*parts)[0]
		k := min(len(p), maxPlain-(len(out)-start))
		out = append(out, p[:k]...)
		if k == len(p) {
			*parts = (*parts)[1:]
		} else {
			(*parts)[0] = p[k:]
		}
	}
	out, err := cs.Encrypt(out[:start], nil, out[start:])
	if err != nil {
		return nil, fmt.Errorf("encrypting frame: %w", err)
	}
	binary.BigEndian.PutUint32(out[start-4:], uint32(len(out)-start))
	return out, nil
}
