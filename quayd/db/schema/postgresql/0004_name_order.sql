-- Names sort bytewise (the "C" collation), as they do in SQLite, whatever collation the
-- database was created with: account, team, robot and permission listings come out in the
-- same order on both backends.
ALTER TABLE account ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE team
    ALTER COLUMN org TYPE TEXT COLLATE "C",
    ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE team_member
    ALTER COLUMN org TYPE TEXT COLLATE "C",
    ALTER COLUMN team TYPE TEXT COLLATE "C",
    ALTER COLUMN member TYPE TEXT COLLATE "C";
ALTER TABLE robot
    ALTER COLUMN namespace TYPE TEXT COLLATE "C",
    ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE repository_permission
    ALTER COLUMN repository TYPE TEXT COLLATE "C",
    ALTER COLUMN subject TYPE TEXT COLLATE "C";
ALTER TABLE webhook ALTER COLUMN repository TYPE TEXT COLLATE "C";
