package xdprelay

import "fmt"

// Mode says whether and how the relay attaches its XDP program; it is the value of
// cvlan-relay's --xdp flag.
type Mode string

// XDP modes.
const (
	// ModeAuto tries native XDP on each interface, then generic; if the program
	// cannot load or attach at all, the relay runs on the Go path alone.
	ModeAuto Mode = "auto"
	// ModeNative attaches in driver mode or fails.
	ModeNative Mode = "native"
	// ModeGeneric attaches in generic (skb) mode or fails.
	ModeGeneric Mode = "generic"
	// ModeOff never loads the program: the Go path relays everything.
	ModeOff Mode = "off"
)

// ParseMode parses a mode name; "" is ModeAuto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeNative, ModeGeneric, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("unknown XDP mode %q (want auto, native, generic or off)", s)
}

// String returns the mode's name.
func (m Mode) String() string {
	if m == "" {
		return string(ModeAuto)
	}
	return string(m)
}

// Set parses s into m, so that *Mode is a flag.Value (and a pflag.Value).
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Type names the flag's type for pflag.
func (m *Mode) Type() string { return "auto|native|generic|off" }
