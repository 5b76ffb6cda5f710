-- SQLite compares text bytewise already (BINARY); the PostgreSQL form of this step gives
-- its name columns the same order. Nothing to change here.
SELECT 1;
