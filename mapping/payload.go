package mapping

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// Decimal is a JSON number kept as its exact text, so amounts such as 1325.00 survive a
// decode/encode round trip unchanged (float64 would print 1325). Unlike json.Number it refuses
// JSON strings, so a payload with "subtotal":"1325" is rejected as the wrong type.
type Decimal string

var decimalType = reflect.TypeFor[Decimal]()

// UnmarshalJSON accepts only a JSON number literal.
func (d *Decimal) UnmarshalJSON(b []byte) error {
	if !isJSONNumber(b) {
		return &json.UnmarshalTypeError{Value: literalKind(b), Type: decimalType}
	}
	*d = Decimal(b)
	return nil
}

// MarshalJSON writes the number's text; the zero value is 0.
func (d Decimal) MarshalJSON() ([]byte, error) {
	if d == "" {
		return []byte("0"), nil
	}
	if !isJSONNumber([]byte(d)) {
		return nil, fmt.Errorf("encode Decimal: %q is not a JSON number", string(d))
	}
	return []byte(d), nil
}

// isJSONNumber reports whether b is exactly a JSON number (RFC 8259 grammar).
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		n := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == n {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		n := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == n {
			return false
		}
	}
	return i == len(b) && len(b) > 0
}

// literalKind names the JSON kind of a raw value, without its content.
func literalKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// jsonKind names the JSON kind a Go type expects.
func jsonKind(e *json.UnmarshalTypeError) string {
	t := e.Type
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "value"
	}
	if t == decimalType {
		return "number"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return t.String()
}

// Customer is the CustomerResponseType payload of CUSTOMERCRE and CUSTOMERMOD messages, with
// every field of the appendix's sample and its JSON type. Fields the sample shows as null are
// pointers; values whose shape the sample does not show (null objects, empty arrays) are kept
// verbatim as json.RawMessage so real data is not rejected on a guess.
type Customer struct {
	CustomerID             string                  `json:"customerID"`
	SignupDate             string                  `json:"signupDate"`
	RetailStoreID          string                  `json:"retailStoreID"`
	FirstPurchaseDate      *string                 `json:"firstPurchaseDate"`
	LastPurchaseDate       *string                 `json:"lastPurchaseDate"`
	Validation             *Validation             `json:"validation"`
	OrgName                *string                 `json:"orgName"`
	CustOrgTypcode         *string                 `json:"custOrgTypcode"`
	EmployeeID             *string                 `json:"employeeID"`
	BusinessName           *string                 `json:"businessName"`
	CustomerClass          string                  `json:"customerClass"`
	Source                 string                  `json:"source"`
	Prospect               bool                    `json:"prospect"`
	CustomerOwnerID        *string                 `json:"customerOwnerID"`
	HouseholdKey           string                  `json:"householdKey"`
	CustomerNumber         *string                 `json:"customerNumber"`
	CustomerReference      *string                 `json:"customerReference"`
	LastUpdateInfo         json.RawMessage         `json:"lastUpdateInfo"`
	Affiliation            []Affiliation           `json:"affiliation"`
	EntityInformation      *EntityInformation      `json:"entityInformation"`
	AlternateKey           []json.RawMessage       `json:"alternateKey"`
	CustomAttribute        []json.RawMessage       `json:"customAttribute"`
	CustomerNotes          *CustomerNotes          `json:"customerNotes"`
	EligiblePromotionDeals *EligiblePromotionDeals `json:"eligiblePromotionDeals"`
	CustomerSegments       *CustomerSegments       `json:"customerSegments"`
	CustomerCards          *CustomerCards          `json:"customerCards"`
	AssociateAssignments   json.RawMessage         `json:"associateAssignments"`
	PersonalPreferences    *PersonalPreferences    `json:"personalPreferences"`
	Franchisees            *Franchisees            `json:"franchisees"`
}

// Validation is Customer.validation; validFlag is the string "true" or "false" in CE's output.
type Validation struct {
	ValidFlag string `json:"validFlag"`
}

// Affiliation is one entry of Customer.affiliation.
type Affiliation struct {
	RetailStoreID *string `json:"retailStoreID"`
}

// EntityInformation is Customer.entityInformation.
type EntityInformation struct {
	Individual *Individual `json:"individual"`
}

// Individual holds a person's name, contacts and activity summaries.
type Individual struct {
	Suffix                    *string                    `json:"suffix"`
	SortingName               *string                    `json:"sortingName"`
	NickName                  *string                    `json:"nickName"`
	Salutation                *string                    `json:"salutation"`
	Name                      *PersonName                `json:"name"`
	ContactInformation        *ContactInformation        `json:"contactInformation"`
	PersonalSummary           *PersonalSummary           `json:"personalSummary"`
	SocioEconomicProfile      *SocioEconomicProfile      `json:"socioEconomicProfile"`
	LifetimeActivitySummary   *LifetimeActivitySummary   `json:"lifetimeActivitySummary"`
	YearToDateActivitySummary *YearToDateActivitySummary `json:"yearToDateActivitySummary"`
}

// PersonName is Individual.name: a list of name parts.
type PersonName struct {
	Name []NamePart `json:"name"`
}

// NamePart is one part of a name (location FIRST, MIDDLE or LAST).
type NamePart struct {
	Location string  `json:"location"`
	Value    *string `json:"value"`
}

// ContactInformation lists addresses, telephones and e-mails; their shape is kept verbatim.
type ContactInformation struct {
	Address   []json.RawMessage `json:"address"`
	Telephone []json.RawMessage `json:"telephone"`
	Email     []json.RawMessage `json:"email"`
}

// PersonalSummary is Individual.personalSummary.
type PersonalSummary struct {
	GenderType        *string `json:"genderType"`
	BirthDate         *string `json:"birthDate"`
	Anniversary       *string `json:"anniversary"`
	MaritalStatusCode *string `json:"maritalStatusCode"`
	Ethnicity         *string `json:"ethnicity"`
	Rent              bool    `json:"rent"`
	LanguageCode      string  `json:"languageCode"`
}

// SocioEconomicProfile is Individual.socioEconomicProfile; the amounts' type is not shown by the
// sample (null), so they are kept verbatim.
type SocioEconomicProfile struct {
	AnnualIncomeAmount          json.RawMessage `json:"annualIncomeAmount"`
	NetWorth                    json.RawMessage `json:"netWorth"`
	HighestEducationalLevelName string          `json:"highestEducationalLevelName"`
}

// LifetimeActivitySummary is Individual.lifetimeActivitySummary; CE sends the figures as strings.
type LifetimeActivitySummary struct {
	TotalReturnsAmount      string `json:"totalReturnsAmount"`
	TotalSalesAmount        string `json:"totalSalesAmount"`
	TotalTransactionCount   string `json:"totalTransactionCount"`
	TotalItemsSoldCount     string `json:"totalItemsSoldCount"`
	TotalItemsReturnedCount string `json:"totalItemsReturnedCount"`
}

// YearToDateActivitySummary is Individual.yearToDateActivitySummary; figures are strings.
type YearToDateActivitySummary struct {
	YearToDateReturnsAmount      string `json:"yearToDateReturnsAmount"`
	YearToDateSalesAmount        string `json:"yearToDateSalesAmount"`
	YearToDateTransactionCount   string `json:"yearToDateTransactionCount"`
	YearToDateItemsSoldCount     string `json:"yearToDateItemsSoldCount"`
	YearToDateItemsReturnedCount string `json:"yearToDateItemsReturnedCount"`
}

// CustomerNotes is Customer.customerNotes.
type CustomerNotes struct {
	CustomerNote []json.RawMessage `json:"customerNote"`
}

// EligiblePromotionDeals is Customer.eligiblePromotionDeals.
type EligiblePromotionDeals struct {
	PromotionDealID []json.RawMessage `json:"promotionDealId"`
}

// CustomerSegments is Customer.customerSegments.
type CustomerSegments struct {
	Segment []json.RawMessage `json:"segment"`
}

// CustomerCards is Customer.customerCards.
type CustomerCards struct {
	Instrument []json.RawMessage `json:"instrument"`
}

// PersonalPreferences is Customer.personalPreferences.
type PersonalPreferences struct {
	ContactPreference []ContactPreference `json:"contactPreference"`
}

// ContactPreference is one contact permission; permission is the string "true" or "false".
type ContactPreference struct {
	ContactType string `json:"contactType"`
	Permission  string `json:"permission"`
}

// Franchisees is Customer.franchisees.
type Franchisees struct {
	Franchisee []Franchisee `json:"franchisee"`
}

// Franchisee is one franchisee assignment.
type Franchisee struct {
	FranchiseeID   int64  `json:"franchiseeId"`
	FranchiseeName string `json:"franchiseeName"`
}

// Transaction is the TransactionType payload of POSTRNCRE messages, with every field of the
// appendix's sample. Amounts are Decimal so their text survives; fields the sample shows as null
// are pointers (or json.RawMessage where the type cannot be told).
type Transaction struct {
	RetailTransactionID     string            `json:"retailTransactionId"`
	OrganizationID          int64             `json:"organizationId"`
	BeginDatetime           string            `json:"beginDatetime"`
	BusinessDate            string            `json:"businessDate"`
	OriginalBusinessDate    string            `json:"originalBusinessDate"`
	CustomerID              string            `json:"customerId"`
	VoidFlag                bool              `json:"voidFlag"`
	CustomerKey             json.RawMessage   `json:"customerKey"`
	EndDatetime             string            `json:"endDatetime"`
	CurrencyTypeCode        string            `json:"currencyTypeCode"`
	OrgCurrencyTypeCode     string            `json:"orgCurrencyTypeCode"`
	CurrencyExchangeRate    Decimal           `json:"currencyExchangeRate"`
	KeyedOfflineFlag        bool              `json:"keyedOfflineFlag"`
	Notes                   *string           `json:"notes"`
	OperatorID              string            `json:"operatorId"`
	CustomerOrganizationID  *string           `json:"customerOrganizationId"`
	CustomerOrganizationKey json.RawMessage   `json:"customerOrganizationKey"`
	PostedFlag              bool              `json:"postedFlag"`
	RetailLocationID        string            `json:"retailLocationId"`
	NonPhysicalItemTotal    Decimal           `json:"nonPhysicalItemTotal"`
	Subtotal                Decimal           `json:"subtotal"`
	TaxTotal                Decimal           `json:"taxTotal"`
	Total                   Decimal           `json:"total"`
	MarkdownTotal           Decimal           `json:"markdownTotal"`
	CostOfGoodsSoldTotal    Decimal           `json:"costOfGoodsSoldTotal"`
	TransactionReasonCode   *string           `json:"transactionReasonCode"`
	TransactionSequence     int64             `json:"transactionSequence"`
	TransactionStatusCode   string            `json:"transactionStatusCode"`
	TransactionTypeCode     string            `json:"transactionTypeCode"`
	WorkstationID           int64             `json:"workstationId"`
	LinkedTransactionID     *string           `json:"linkedTransactionId"`
	CreateDate              *string           `json:"createDate"`
	CreateUserID            *string           `json:"createUserId"`
	UpdateDate              *string           `json:"updateDate"`
	UpdateUserID            *string           `json:"updateUserId"`
	LineItems               []LineItem        `json:"lineItems"`
	TransactionProperties   []json.RawMessage `json:"transactionProperties"`
}

// LineItem is one line of a transaction (sale, tender, tax...).
type LineItem struct {
	LineItemSequence       int64              `json:"lineItemSequence"`
	BeginDateTimestamp     string             `json:"beginDateTimestamp"`
	EndDateTimestamp       string             `json:"endDateTimestamp"`
	LineItemStatusCode     *string            `json:"lineItemStatusCode"`
	LineItemTLogSequence   int64              `json:"lineItemTLogSequence"`
	LineItemTypeCode       string             `json:"lineItemTypeCode"`
	Notes                  *string            `json:"notes"`
	VoidFlag               bool               `json:"voidFlag"`
	VoidLineItemReasonCode *string            `json:"voidLineItemReasonCode"`
	CustID                 string             `json:"custId"`
	CreateDate             *string            `json:"createDate"`
	CreateUserID           *string            `json:"createUserId"`
	UpdateDate             *string            `json:"updateDate"`
	UpdateUserID           *string            `json:"updateUserId"`
	LineItemModifiers      []LineItemModifier `json:"lineItemModifiers"`
}

// LineItemModifier is one modifier of a line item.
type LineItemModifier struct {
	LineItemSequence         int64   `json:"lineItemSequence"`
	LineItemModifierSequence int64   `json:"lineItemModifierSequence"`
	VoidFlag                 bool    `json:"voidFlag"`
	CustID                   string  `json:"custId"`
	CreateDate               *string `json:"createDate"`
	CreateUserID             *string `json:"createUserId"`
	UpdateDate               *string `json:"updateDate"`
	UpdateUserID             *string `json:"updateUserId"`
}

// DecodeCustomer decodes a customer payload strictly (one JSON object, no unknown fields, exact
// types), so a malformed row is caught before it reaches the receiver. Errors wrap ErrBadPayload
// and never quote the payload.
func DecodeCustomer(b []byte) (*Customer, error) {
	c := new(Customer)
	if err := decodePayload(b, c); err != nil {
		return nil, err
	}
	return c, nil
}

// DecodeTransaction decodes a transaction payload strictly, like DecodeCustomer.
func DecodeTransaction(b []byte) (*Transaction, error) {
	t := new(Transaction)
	if err := decodePayload(b, t); err != nil {
		return nil, err
	}
	return t, nil
}

func decodePayload(b []byte, v any) error {
	if err := firstByte(b, '{'); err != nil {
		return fmt.Errorf("%w: payload %s", ErrBadPayload, err.Error())
	}
	if err := decodeStrict(b, v); err != nil {
		return fmt.Errorf("%w: %s", ErrBadPayload, describe(err, "payload"))
	}
	return nil
}

// CheckPayload validates what a queue row would send, before it is sent, so a row no receiver
// can accept is parked instead of retried. For Customer CREATE/UPDATE and Transaction CREATE the
// payload must decode strictly into Customer / Transaction and its id (customerID /
// retailTransactionId) must equal uniqueKey, the row's UNIQUE_ID. For Customer DELETE the payload
// is the customer id itself: uniqueKey must be a non-empty decimal integer and payload must be
// empty (JSON_OBJECT is null) or equal to it. Errors wrap ErrUnknownObject, ErrUnknownAction or
// ErrBadPayload and never quote the payload.
func CheckPayload(objName, action, uniqueKey string, payload []byte) error {
	_, msgAction, err := Lookup(objName, action)
	if err != nil {
		return err
	}
	return check(msgAction, uniqueKey, true, payload)
}

// CheckMessage validates a received message's payload for its own consistency, as a receiver
// sees it: the uniqueId is the queue row's ID, not the record's, so only the payload's own id is
// checked (non-empty; for CUSTOMERDEL a decimal integer).
func CheckMessage(m Message) error {
	if _, _, err := ObjectAction(m.Type, m.Action); err != nil {
		return err
	}
	if m.Action == ActionCustomerDelete {
		return check(m.Action, m.Payload, true, []byte(m.Payload))
	}
	return check(m.Action, "", false, []byte(m.Payload))
}

func check(msgAction, uniqueKey string, haveKey bool, payload []byte) error {
	switch msgAction {
	case ActionCustomerDelete:
		if !isDecimalInteger(uniqueKey) {
			if uniqueKey == "" {
				return fmt.Errorf("%w: customer id (UNIQUE_ID) of a DELETE is empty", ErrBadPayload)
			}
			return fmt.Errorf("%w: customer id (UNIQUE_ID) %q of a DELETE is not a decimal integer", ErrBadPayload, clip(uniqueKey))
		}
		if len(payload) != 0 && string(payload) != uniqueKey {
			return fmt.Errorf("%w: payload of a DELETE must be empty or the customer id %q", ErrBadPayload, uniqueKey)
		}
		return nil
	case ActionCustomerCreate, ActionCustomerUpdate:
		c, err := DecodeCustomer(payload)
		if err != nil {
			return err
		}
		return matchID("customerID", c.CustomerID, uniqueKey, haveKey)
	case ActionTransactionCreate:
		t, err := DecodeTransaction(payload)
		if err != nil {
			return err
		}
		return matchID("retailTransactionId", t.RetailTransactionID, uniqueKey, haveKey)
	}
	return fmt.Errorf("%w: action %q", ErrUnknownAction, msgAction)
}

func matchID(field, id, uniqueKey string, haveKey bool) error {
	if id == "" {
		return fmt.Errorf("%w: %s is missing or empty", ErrBadPayload, field)
	}
	if haveKey && id != uniqueKey {
		return fmt.Errorf("%w: %s %q does not match UNIQUE_ID %q", ErrBadPayload, field, clip(id), clip(uniqueKey))
	}
	return nil
}

// clip bounds an identifier quoted in an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func isDecimalInteger(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
