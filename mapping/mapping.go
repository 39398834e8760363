// Package mapping is the Data Sync wire format: how a queue row (OBJ_NAME, ACTION, UNIQUE_ID,
// JSON_OBJECT) becomes a message in the JSON body POSTed to the receiver, and the strict decoding
// of those bodies and of the Customer and Transaction payloads they carry. The relay, the
// reference receiver and the tests all share it so both ends agree byte for byte.
package mapping

import (
	"errors"
	"fmt"
)

// Queue OBJ_NAME values, as our triggers store them (case-sensitive).
const (
	// ObjCustomer is the OBJ_NAME of rows in the customer queues.
	ObjCustomer = "Customer"
	// ObjTransaction is the OBJ_NAME of rows in the transaction queues.
	ObjTransaction = "Transaction"
)

// Queue ACTION values, as our triggers store them (case-sensitive).
const (
	// ActionCreate marks a created (or merged-into) record.
	ActionCreate = "CREATE"
	// ActionUpdate marks an updated record.
	ActionUpdate = "UPDATE"
	// ActionDelete marks a deleted (or merged-away) record; its JSON_OBJECT is null.
	ActionDelete = "DELETE"
)

// Envelope "type" values (Table H-5).
const (
	// TypeCustomer is the message type of every customer message.
	TypeCustomer = "CUSTOMER"
	// TypeTransaction is the message type of posted-transaction messages.
	TypeTransaction = "POSTRN"
)

// Envelope "action" values (Table H-5).
const (
	// ActionCustomerCreate is the message action of a customer CREATE.
	ActionCustomerCreate = "CUSTOMERCRE"
	// ActionCustomerUpdate is the message action of a customer UPDATE.
	ActionCustomerUpdate = "CUSTOMERMOD"
	// ActionCustomerDelete is the message action of a customer DELETE; its payload is the customer id.
	ActionCustomerDelete = "CUSTOMERDEL"
	// ActionTransactionCreate is the message action of a transaction CREATE.
	ActionTransactionCreate = "POSTRNCRE"
)

var (
	// ErrUnknownObject reports an OBJ_NAME (or message type) that Table H-5 does not map, so the
	// caller can park the row instead of retrying it forever.
	ErrUnknownObject = errors.New("unknown object")
	// ErrUnknownAction reports an ACTION (or message action) that Table H-5 does not map for its
	// object, so the caller can park the row instead of retrying it forever.
	ErrUnknownAction = errors.New("unknown action")
	// ErrBadPayload reports a payload that would not be accepted by a strict receiver; such a row
	// will never succeed and must not be retried.
	ErrBadPayload = errors.New("bad payload")
	// ErrBadEnvelope reports a request body that is not a well-formed Data Sync envelope.
	ErrBadEnvelope = errors.New("bad envelope")
)

// Lookup maps a queue row's OBJ_NAME and ACTION to the message type and action of Table H-5. It
// is case-sensitive because our triggers store the exact spellings above; it does not allocate on
// success because the relay calls it for every row.
func Lookup(objName, action string) (msgType, msgAction string, err error) {
	switch objName {
	case ObjCustomer:
		switch action {
		case ActionCreate:
			return TypeCustomer, ActionCustomerCreate, nil
		case ActionUpdate:
			return TypeCustomer, ActionCustomerUpdate, nil
		case ActionDelete:
			return TypeCustomer, ActionCustomerDelete, nil
		}
		return "", "", fmt.Errorf("%w: ACTION %q for OBJ_NAME %q: accepted are CREATE, UPDATE, DELETE",
			ErrUnknownAction, action, objName)
	case ObjTransaction:
		if action == ActionCreate {
			return TypeTransaction, ActionTransactionCreate, nil
		}
		return "", "", fmt.Errorf("%w: ACTION %q for OBJ_NAME %q: accepted is CREATE",
			ErrUnknownAction, action, objName)
	}
	return "", "", fmt.Errorf("%w: OBJ_NAME %q: accepted are Customer, Transaction", ErrUnknownObject, objName)
}

// ObjectAction is the inverse of Lookup: it maps a message's type and action back to the queue
// OBJ_NAME and ACTION, so a receiver can validate a payload with CheckPayload.
func ObjectAction(msgType, msgAction string) (objName, action string, err error) {
	switch msgType {
	case TypeCustomer:
		switch msgAction {
		case ActionCustomerCreate:
			return ObjCustomer, ActionCreate, nil
		case ActionCustomerUpdate:
			return ObjCustomer, ActionUpdate, nil
		case ActionCustomerDelete:
			return ObjCustomer, ActionDelete, nil
		}
		return "", "", fmt.Errorf("%w: action %q for type %q: accepted are CUSTOMERCRE, CUSTOMERMOD, CUSTOMERDEL",
			ErrUnknownAction, msgAction, msgType)
	case TypeTransaction:
		if msgAction == ActionTransactionCreate {
			return ObjTransaction, ActionCreate, nil
		}
		return "", "", fmt.Errorf("%w: action %q for type %q: accepted is POSTRNCRE",
			ErrUnknownAction, msgAction, msgType)
	}
	return "", "", fmt.Errorf("%w: type %q: accepted are CUSTOMER, POSTRN", ErrUnknownObject, msgType)
}
