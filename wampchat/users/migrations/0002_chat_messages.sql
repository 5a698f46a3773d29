-- Chat history (issue 5 item 3): every user/admin publication on a chat topic.
CREATE TABLE chat_messages (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic          text NOT NULL,
    sender_authid  text NOT NULL,
    sender_user_id bigint,
    message        text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_topic_id_idx ON chat_messages (topic, id DESC);
