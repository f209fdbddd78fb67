-- Erasure and access by customer, and the audit log of erasures.

-- Records by customer: an erasure or an access request reads one
-- customer's rows instead of every record (the embedded store walks them
-- all). The hash selects candidates; the id in the body decides.
CREATE INDEX cxop_records_customer ON cxop_records (customer_hash);

-- Settings every replica shares, such as the audit log's hash key.
CREATE TABLE cxop_settings (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);

-- The audit log of erasures: no personal data, only when, the customer's
-- keyed hash and what was erased (customerdata.Erasure as JSON).
CREATE TABLE cxop_erasures (
    seq   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time  bigint NOT NULL,
    entry bytea  NOT NULL
);
CREATE INDEX cxop_erasures_time ON cxop_erasures (time, seq);
