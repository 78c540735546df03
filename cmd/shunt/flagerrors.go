package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/internal/clip"
)

// flagError turns pflag's parse errors into shunt's form: the flag's name
// first, the value clipped, the reason in words (no strconv text), and
// exit code 2.
func flagError(_ *cobra.Command, err error) error {
	var invalid *pflag.InvalidValueError
	var required *pflag.ValueRequiredError
	var unknown *pflag.NotExistError
	var syntax *pflag.InvalidSyntaxError
	switch {
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		return usageError{fmt.Errorf("%s: %s %s", flagName(f), clip.Quote(invalid.GetValue()), valueReason(f, invalid.Unwrap()))}
	case errors.As(err, &required):
		return usageError{fmt.Errorf("%s needs a value", flagName(required.GetFlag()))}
	case errors.As(err, &unknown):
		name := unknown.GetSpecifiedName()
		if name == "" {
			return usageError{fmt.Errorf("unknown shorthand flag: -%s", clip.Cut(unknown.GetSpecifiedShortnames()))}
		}
		return usageError{fmt.Errorf("unknown flag: --%s", clip.Cut(name))}
	case errors.As(err, &syntax):
		return usageError{fmt.Errorf("bad flag syntax: %s", clip.Cut(syntax.GetSpecifiedFlag()))}
	}
	return usageError{errors.New(clipMessage(err.Error()))}
}

func flagName(f *pflag.Flag) string {
	if f.Shorthand != "" {
		return "--" + f.Name + " (-" + f.Shorthand + ")"
	}
	return "--" + f.Name
}

// valueReason says what was wrong with a value: shunt's own flag types say
// it themselves; pflag's standard ones fail with strconv and time errors,
// which are put in words.
func valueReason(f *pflag.Flag, err error) string {
	var num *strconv.NumError
	switch typ := f.Value.Type(); {
	case err == nil:
		return "is not a valid " + typ
	case typ == "bool" || typ == "boolSlice":
		return "is not true or false"
	case (typ == "duration" || typ == "durationSlice") && strings.HasPrefix(err.Error(), "time: "):
		return "is not a duration such as 5s"
	case errors.As(err, &num) && num.Err == strconv.ErrRange:
		return "is out of range for a " + typ
	case errors.As(err, &num):
		return "is not a " + typ
	}
	return clipMessage(err.Error())
}

// clipMessage bounds a message that may carry a value shunt did not clip.
func clipMessage(s string) string {
	const most = 4 * clip.Max
	if len(s) <= most {
		return s
	}
	return s[:most] + "… (cut)"
}
